"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET per message; a no-op elsewhere."""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


def notify(*assignments: str) -> bool:
    """Send `READY=1`, `WATCHDOG=1`, `STATUS=...` (several in one datagram) to systemd.

    Returns False when not running under a notify-type unit; a failed send is logged, never
    raised, so a missing or restarted socket cannot take the service down."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not assignments:
        return False
    if address.startswith("@"):
        # Abstract namespace: the name starts with a NUL byte instead of '@'.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(assignments).encode(), address)
    except OSError as exc:
        log.warning("sd_notify_failed", socket=os.environ.get("NOTIFY_SOCKET"), error=str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when systemd does not
    watch this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for the process that started us, not for us
    return int(usec) / 2e6
