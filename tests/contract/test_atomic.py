import os
import stat

import pytest

from contract.atomic import atomic_write_text, staged_dir, staged_file


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_artifacts_get_umask_modes_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with staged_file(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
        with staged_dir(tmp_path / "repo") as tmp:
            (tmp / "m").mkdir()
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.json") == mode(tmp_path / "b.bin") == 0o644
    assert mode(tmp_path / "repo") == 0o755


def test_staged_dir_keeps_the_old_tree_on_failure(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(repo) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    assert [p.name for p in repo.iterdir()] == ["old.txt"]
    with staged_dir(repo) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in repo.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
