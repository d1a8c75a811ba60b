"""The CI soak: one minute at concurrency 32 against the CLI's own server."""

import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_one_minute_soak_loses_nothing_and_does_not_grow(deployment, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reliability", "soak", "--minutes", "1", "--concurrency", "32",
         "--repo", str(deployment.repo), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"soak: (\d+) requests, (\d+) errors, rss growth (-?[\d.]+)%", last)
    assert match, proc.stdout + proc.stderr
    requests, errors, growth = int(match[1]), int(match[2]), float(match[3])
    assert requests > 1000 and errors == 0 and growth < 10.0
    assert proc.returncode == 0
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["p99_ms"] > 0 and len(result["samples"]) >= 30
    assert (tmp_path / "soak.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_short_soak_on_the_openvino_backend_loses_nothing(deployment, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reliability", "soak", "--minutes", "0.25", "--concurrency", "16",
         "--engine", "openvino", "--repo", str(deployment.repo), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "(openvino)" in proc.stdout.splitlines()[0], proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"soak: (\d+) requests, (\d+) errors, rss growth (-?[\d.]+)%", last)
    assert match, proc.stdout + proc.stderr
    assert int(match[1]) > 100 and int(match[2]) == 0 and proc.returncode == 0
