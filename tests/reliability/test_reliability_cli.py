"""`python -m reliability`: flags and names are checked before any server starts."""

import subprocess
import sys

from tritonclient.utils import InferenceServerException

from client.connection import is_transient


def _run(*argv):
    return subprocess.run(
        [sys.executable, "-m", "reliability", *argv], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_three_commands():
    proc = _run("--help")
    assert proc.returncode == 0
    assert all(c in proc.stdout for c in ("chaos", "soak", "faults"))


def test_bad_usage_exits_2():
    assert _run("nope").returncode == 2
    assert _run("soak", "--minutes", "0").returncode == 2


def test_unknown_names_are_one_line_errors(tmp_path):
    for argv, words in (
        (["chaos", "--only", "no such kind"], "unknown kind"),
        (["faults", "--only", "no-such-fault"], "unknown fault"),
    ):
        proc = _run(*argv, "--out", str(tmp_path))
        assert proc.returncode == 1
        assert proc.stderr.startswith("reliability: error: ") and words in proc.stderr
        assert "Traceback" not in proc.stderr


def test_chaos_list_needs_no_server():
    proc = _run("chaos", "--list")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) >= 40


def test_retry_rules_cover_restarts_and_stub_crashes_but_not_bad_input():
    stub = InferenceServerException("in ensemble 'x', Stub process 'x_0_0' is not healthy.", "500")
    stopping = InferenceServerException("Server is stopping", "StatusCode.UNAVAILABLE")
    bad = InferenceServerException("image bytes: not a readable image", "400")
    refused = ConnectionRefusedError(111, "Connection refused")
    assert is_transient(stub) and is_transient(stopping) and is_transient(refused)
    assert not is_transient(bad)
