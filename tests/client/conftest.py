"""Client fixtures: folders of images (the tiny repository and server are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from client_helpers import random_image, write_png


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """imgs/ with 7 images in nested folders, plus a hidden folder that must be ignored."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for rel in ("b.png", "a.png", "sub/c.png", "sub/deeper/d.png", "sub/e.png", "z/f.png"):
        write_png(root / rel, random_image(rng))
    write_png(root / "sub" / "rgb.png", random_image(rng, rgb=True))
    write_png(root / ".hidden" / "x.png", random_image(rng))
    return root
