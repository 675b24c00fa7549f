"""Serving the web application with uvicorn on one address (loopback unless told otherwise)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from pathlib import Path

from sdpbatch.control.configdb import Config
from sdpbatch.control.configdb.config import BACKEND_ENV, HOST_ENV, PORT_ENV
from sdpbatch.control.system.state import SystemState
from sdpbatch.vocabulary import LOOPBACK_NAMES

LOG = logging.getLogger(__name__)


class AddressInUse(OSError):
    """The address to serve on cannot be bound."""


def config_for(data_dir: Path) -> Config:
    """The database named by the environment, else that of the system ``sdpbatch up`` runs
    for ``data_dir``, else the default (etcd on :data:`~sdpbatch.vocabulary.LOOPBACK`, port
    :data:`~sdpbatch.vocabulary.ETCD_PORT`)."""
    if any(os.environ.get(k) for k in (BACKEND_ENV, HOST_ENV, PORT_ENV)):
        return Config()
    state = SystemState.load(data_dir)
    if state is not None and state.env:
        env = state.env
        return Config(env[BACKEND_ENV], host=env[HOST_ENV], port=int(env[PORT_ENV]))
    return Config()


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise AddressInUse(f"cannot serve on {host}:{port}: {err.strerror}") from err
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(data_dir: Path, *, host: str, port: int, period: float = 5.0) -> None:
    """Serve the pages of ``data_dir`` until SIGINT or SIGTERM (prints the address first).

    A server bound to loopback only answers requests addressed to a loopback name (no DNS
    rebinding from another site).
    """
    import uvicorn

    from sdpbatch.web.app import create_app

    data_dir = Path(data_dir).resolve()
    sock = bind(host, port)
    app = create_app(
        data_dir,
        config=config_for(data_dir),
        period=period,
        allowed_hosts=list(LOOPBACK_NAMES) if is_loopback(host) else None,
    )
    print(f"sdpbatch web: serving {data_dir} at {url_of(sock)}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    server.run(sockets=[sock])
