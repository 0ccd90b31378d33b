"""The web plugin's settings, its token, and the uvicorn server that runs the app (app.py) from a
thread inside the daemon or in the foreground (`framewatch serve`). FastAPI and uvicorn are
imported when the server is built, not when the plugin loads, so a config check works without the
`web` extra."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import TYPE_CHECKING, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

from daemon.hookspecs import ConfigPath, get_logger, read_secret

if TYPE_CHECKING:
    import uvicorn

log = get_logger(__name__)

CREDENTIAL = "web-token"  # file name under $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class WebSettings(BaseModel):
    """`[plugins.web]`"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0: any free port).")
    token: SecretStr | None = Field(
        None, description="Bearer token every request must carry; better: token_file."
    )
    token_file: ConfigPath | None = Field(None, description="File holding the bearer token.")
    public_url: AnyHttpUrl | None = Field(
        None,
        description="The base URL others reach this server at (e.g. https://fw.example.org behind "
        "a reverse proxy): API links such as event thumbnails are absolute under it. Give the "
        "webhook plugin the same value as its web_url so its payloads link thumbnails.",
    )

    @model_validator(mode="after")
    def _one_token(self) -> WebSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token must not be empty")
        return self


def resolve_token(settings: WebSettings) -> str | None:
    """The token from settings, its file, or systemd's credentials folder; None: no auth."""
    found = read_secret(settings.token, settings.token_file, CREDENTIAL)
    if found is None:
        return None
    token, where = found[0].strip(), found[1]
    if not token:
        raise ValueError(f"web token in {where} is empty")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebServer:
    """uvicorn serving the web app from a thread: `start` binds (so a busy port fails at once,
    with the address in the message) and returns once requests are answered; `stop` joins."""

    def __init__(self, asgi: Any, host: str, port: int):
        self.asgi, self.host, self.port = asgi, host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(
                f"web: cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        sock.listen(128)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._sock = sock
        return sock

    def _make_server(self) -> uvicorn.Server:
        import uvicorn

        # log_config=None: uvicorn's records go through framewatch's logging (structlog).
        config = uvicorn.Config(
            self.asgi,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            # A player streaming a long video must not hold up the daemon's shutdown.
            timeout_graceful_shutdown=3,
        )
        return uvicorn.Server(config)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        sock = self.bind()
        self._server = server = self._make_server()
        # uvicorn installs signal handlers only in the main thread: the daemon keeps its own.
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="framewatch-web", daemon=True
        )
        self._thread.start()
        stop = threading.Event()
        while not server.started and self._thread.is_alive():
            stop.wait(0.02)
            timeout_s -= 0.02
            if timeout_s <= 0:
                break
        if not server.started:
            self.stop()
            raise RuntimeError(f"web: server did not start on {self.url}")
        log.info("web_started", url=self.url)

    def run(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (`framewatch serve`)."""
        import signal

        sock = self.bind()
        self._server = self._make_server()
        log.info("web_started", url=self.url)
        # uvicorn stops on SIGINT/SIGTERM and then re-raises the signal to the handler it found:
        # a quiet one, so a requested stop exits 0 rather than dying by the signal.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)
        try:
            self._server.run(sockets=[sock])
        finally:
            sock.close()
        log.info("web_stopped", url=self.url)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("web_stop_timeout", url=self.url)
        if self._sock is not None:
            self._sock.close()
        log.info("web_stopped", url=self.url)


def build(config: Any, store: Any, settings: WebSettings) -> tuple[Any, WebServer]:
    """The ASGI app for `store` and the server that will run it (not started)."""
    try:
        from plugins.web.app import create_app
    except ImportError as exc:
        raise RuntimeError(
            f"the web plugin needs the 'web' extra: pip install 'framewatch[web]' ({exc})"
        ) from None
    try:
        token = resolve_token(settings)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"web: cannot read the token: {exc}") from None
    loopback = is_loopback(settings.host)
    if token is None and not loopback:
        log.warning(
            "web_without_token",
            host=settings.host,
            hint="anyone who can reach this address can read every event; set token_file",
        )
    # Bound to loopback, only loopback host names are answered: a web page elsewhere cannot use
    # DNS rebinding to read the API through a browser on this machine.
    asgi = create_app(
        store,
        config,
        token=token,
        trusted_hosts=LOOPBACK_NAMES if loopback else None,
        public_url=str(settings.public_url) if settings.public_url is not None else None,
    )
    return asgi, WebServer(asgi, settings.host, settings.port)
