"""The GPU at run time: one consumer per device (a lease), free memory, out-of-memory release,
and the exit code for CUDA faults. torch is imported only inside functions that need it."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.log import get_logger

if TYPE_CHECKING:
    from daemon.config import Config

log = get_logger(__name__)  # lazy: `framewatch --help` imports this module

GIB = 2**30


class CudaFault(RuntimeError):
    """A non-OOM CUDA error: the process must end with daemon.exits.EXIT_CUDA."""


class GpuLeaseBusy(RuntimeError):
    """Another process holds this device's lease (gpu.when_locked = "error")."""


def is_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (torch.OutOfMemoryError), without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return type(exc).__name__ == "OutOfMemoryError"


def is_cuda_fault(exc: BaseException) -> bool:
    """A CUDA error other than out-of-memory: torch.AcceleratorError, or a RuntimeError naming CUDA."""
    if is_oom(exc):
        return False
    if type(exc).__name__ == "AcceleratorError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("CUDA" in text or "CUBLAS" in text or "cuDNN" in text)


def release_memory() -> None:
    """Free what a failed chunk left: cycles (a traceback holds frames holding tensors) and torch's
    cached blocks. Call it outside the `except` block, once the exception is gone."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@functools.cache
def _libc_trim() -> Callable[[int], int] | None:
    # Looked up on first use: `daemon.gpu` is imported by every CLI command, ctypes is not needed there.
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # not glibc


def trim_heap() -> None:
    """Give the pages a finished chunk freed back to the system (glibc's malloc_trim).

    A chunk's frames (hundreds of MB) are freed into the heap arenas of the threads that made
    them (the prefetch thread's and the main one), which keep the pages: without this, peak RSS
    creeps up with the number of chunks of a long file. Trimming once per chunk costs
    milliseconds; pinning the mmap threshold instead slows CPU-side tensor work (both measured in
    bench/RESULTS.md, memory). Nothing happens without glibc."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def query_nvidia_smi(index: int = 0) -> GpuRuntime | None:
    """GPU `index` as nvidia-smi describes it (name, total GiB, bfloat16 from the compute
    capability), for `framewatch plan`, which must not import torch. None without nvidia-smi or
    a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [
                exe,
                f"--id={index}",
                "--query-gpu=name,memory.total,compute_cap",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        name, mib, cap = out.splitlines()[0].rsplit(",", 2)
        # bfloat16 arithmetic arrived with compute capability 8.0 (Ampere).
        return GpuRuntime(f"cuda:{index}", name.strip(), float(mib) / 1024, None, float(cap) >= 8.0)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("nvidia_smi_failed", error=str(exc))
        return None


def device_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def lease_dir(config: Config) -> Path:
    """Where device leases live: next to the SQLite store (every process sharing a store shares the
    lock), else the state directory."""
    from daemon.config import default_state_dir

    url = config.storage_url()
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        return Path(url[len("sqlite:///") :]).parent
    return default_state_dir()


class GpuLease:
    """An exclusive flock on `<dir>/gpu-cuda0.lock`, held for the life of the process (the kernel
    drops it when the process dies, so a crash never leaves it stale)."""

    def __init__(self, directory: Path, device: str):
        self.path = Path(directory) / f"gpu-{device.replace(':', '')}.lock"
        self.device = device
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(
        self, *, wait: bool, should_stop: Callable[[], bool] = lambda: False, poll_s: float = 2.0
    ) -> bool:
        """Take the lease. Raises GpuLeaseBusy when another process has it and not `wait`;
        waiting, returns False if `should_stop` turns true first."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if not wait:
                    os.close(fd)
                    raise GpuLeaseBusy(
                        f"{self.device} is in use by another framewatch process ({holder}; lock "
                        f'{self.path}); stop it, or set gpu.when_locked = "wait"'
                    ) from None
                if not logged:
                    log.warning(
                        "gpu_lease_waiting", device=self.device, holder=holder, lock=str(self.path)
                    )
                    logged = True
                if should_stop():
                    os.close(fd)
                    return False
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._fd = fd
        log.info("gpu_lease_acquired", device=self.device, lock=str(self.path))
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "pid unknown"
    except OSError:
        return "pid unknown"


@dataclass
class GpuRuntime:
    """What the worker needs to know about its device. `room` (free + this process's cached
    blocks, in GiB) is a callable so tests can stand in for a GPU."""

    device: str  # "cpu" or "cuda:N"
    name: str | None = None
    total_gib: float | None = None
    room: Callable[[], float | None] | None = None
    bf16: bool = True  # computes in bfloat16 (Ampere and newer): what model.dtype auto loads

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def room_gib(self) -> float | None:
        return self.room() if self.room is not None else None

    @classmethod
    def detect(cls, setting: str) -> GpuRuntime:
        """model.device resolved the way the backend resolves it (auto: the first GPU, if any)."""
        if setting == "cpu":
            return cls("cpu")  # without importing torch
        import torch

        if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
            return cls("cpu")
        if not torch.cuda.is_available():
            # The backend refuses to load with a clear message; plan as for the CPU until then.
            return cls("cpu")
        device = "cuda:0" if setting in ("auto", "cuda") else setting
        index = device_index(device)
        props: Any = torch.cuda.get_device_properties(index)

        def room() -> float:
            free, _total = torch.cuda.mem_get_info(index)
            # Our own cached blocks count as room: the next chunk reuses them.
            return (free + torch.cuda.memory_reserved(index)) / GIB

        bf16 = bool(torch.cuda.is_bf16_supported())
        return cls(device, str(props.name), props.total_memory / GIB, room, bf16)
