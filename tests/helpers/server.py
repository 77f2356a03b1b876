"""An ASGI app served by uvicorn on 127.0.0.1 in a thread, for clients that speak real HTTP (pyvo, browsers)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["serving"]


@contextlib.contextmanager
def serving(app, *, timeout_s: float = 20.0):
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL, stops it on exit."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            msg = "the API server did not start"
            raise RuntimeError(msg)
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
