"""A local S3-compatible server (moto in server mode) in a process of its own, for object-store tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["S3Server"]

BIN = Path(sys.executable).parent


class S3Server:
    """``moto_server`` on a free port; ``environment`` points fsspec/s3fs (and worker processes) at it.

    Objects are written through s3fs, as users' tools would write them.
    """

    def __init__(self, log_path: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.environment = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    msg = f"moto_server did not start:\n{Path(log_path).read_text()[-2000:]}"
                    raise RuntimeError(msg) from None
                time.sleep(0.2)

    def filesystem(self):
        """An s3fs filesystem on this server (a fresh instance, not fsspec's cached one)."""
        import s3fs

        return s3fs.S3FileSystem(
            key="testing", secret="testing", client_kwargs={"endpoint_url": self.endpoint}, skip_instance_cache=True
        )

    def upload(self, local: Path, url: str) -> str:
        """Copy a file or a folder (recursively) to ``s3://...``; returns the URL."""
        fs = self.filesystem()
        bucket = url[len("s3://"):].split("/", 1)[0]
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        local = Path(local)
        if local.is_dir():
            for path in sorted(local.rglob("*")):
                if path.is_file():
                    fs.put_file(str(path), f"{url.rstrip('/')}/{path.relative_to(local).as_posix()}")
        else:
            fs.put_file(str(local), url)
        return url

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=20)
        self._log.close()
