"""`python -m bench`: bad arguments and configs end in one line on stderr, exit code 2."""

from __future__ import annotations

import pytest

from bench.run import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--p99-ms", "fast"], "argument --p99-ms: invalid float value: 'fast'"),
        (["--p99-ms", "-3"], "p99 budget"),
        (["--sections", "sweep,warp"], "unknown section 'warp'"),
        (["nonsense"], "unexpected argument 'nonsense'"),
        (["windows.nope=1"], "unknown config key: windows.nope"),
        (["served.concurrency=[0,4]"], "served.concurrency must be"),
        (["served.client_batches=[8,-1]"], "served.client_batches must hold positive"),
        (["windows.stability=2"], "windows.stability must be in (0, 1)"),
        (["raw.concurrency=[0]"], "raw.concurrency must be"),
        (["raw.client_batches=[0]"], "raw.client_batches must hold positive"),
        (["search.preprocess_instances=[0]"], "search.preprocess_instances must hold counts"),
        (["replicas.counts=[]"], "replicas.counts must be"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
    ],
)
def test_bad_arguments_are_one_line(tiny, capsys, args, message):
    _, repo = tiny
    assert main(["--repo", str(repo), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and message in err
    assert len(err.strip().splitlines()) == 1, err


def test_missing_or_ambiguous_repository(tmp_path, tiny, capsys):
    assert main(["--repo", str(tmp_path / "none")]) == 2
    assert "does not exist: run `make optimize`" in capsys.readouterr().err
    assert main(["--repo", str(tmp_path)]) == 2
    assert "no model variants (<name>_fp32/)" in capsys.readouterr().err
    _, repo = tiny
    assert main(["--repo", str(repo), "--model", "other"]) == 2
    err = capsys.readouterr().err
    assert "no variants of 'other'" in err and "tiny" in err
    assert len(err.strip().splitlines()) == 1


def test_help_exits_cleanly(capsys):
    assert main(["--help"]) == 0
    assert "--quick" in capsys.readouterr().out
