"""docker-compose.yml is valid Compose (checked by Debian's docker-compose; no engine runs here)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid():
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs Debian's package")
        pytest.skip("docker-compose not installed")
    done = subprocess.run([binary, "-f", str(REPO / "docker-compose.yml"), "config"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for service in ("redis", "postgres", "migrate", "worker-cpu", "worker-gpu", "flower", "api"):
        assert f"  {service}:" in done.stdout
