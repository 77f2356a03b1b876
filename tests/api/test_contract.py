"""The published OpenAPI contract, checked by an independent fuzzer (schemathesis) against a served database."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.server import serving

from survey_classifier.api import create_app

#: Generated requests per operation and phase: enough to reach every status, small enough for CI (~1-2 min).
MAX_EXAMPLES = 30
SEED = 14
TOKEN = "contract-t0ken-for-the-fuzzer"
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    if not found.exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return str(found)


@pytest.mark.slow
def test_schemathesis_finds_no_contract_failure(service_db, tmp_path):
    """Every check schemathesis has, with a fixed seed, and the write endpoints called with the token."""
    copy = tmp_path / "contract.db"
    shutil.copy(service_db["url"].removeprefix("sqlite:///"), copy)  # the fuzzer retires models: not on the shared db
    app = create_app(f"sqlite:///{copy}", write_token=TOKEN)
    with serving(app) as url:
        done = subprocess.run(
            [_schemathesis(), "--config-file", str(CONFIG), "run", f"{url}/openapi.json", "--checks", "all",
             "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
             "--header", f"Authorization: Bearer {TOKEN}", "--no-color", "--generation-database", "none",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated and int(generated.group(1)) >= 300, report  # the fuzzer really ran
    print(done.stdout[-1500:])
