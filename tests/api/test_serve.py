"""`serve` starts uvicorn over the database; read-only unless the token variable is set."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from survey_classifier.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_then_stops(service_db, workers):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SURVEY_CLASSIFIER_API_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from survey_classifier.api.cli import serve; serve()",
         "--db", service_db["url"], "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stages", timeout=15) as response:
                    stages = json.load(response)["stages"]
                break
            except OSError:  # not listening yet (URLError, refused, reset)
                assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert {s["stage"] for s in stages} == {"measure", "peak", "som", "anomaly"}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/models/1/retire", method="POST")
        try:
            urllib.request.urlopen(request, timeout=15)
            raise AssertionError("a write was accepted by a read-only service")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert f"serving read-only on http://127.0.0.1:{port}/ with {workers} worker(s)" in output


def test_serve_refuses_a_short_token(service_db, monkeypatch):
    monkeypatch.setenv("SURVEY_CLASSIFIER_API_TOKEN", "short")
    result = CliRunner().invoke(main, ["serve", "--db", service_db["url"]])
    assert result.exit_code == 1 and "at least 16 characters" in result.output
