"""Fixtures of the train tests: small ImageFolders made on the spot."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def make_folder():
    """make_folder(root, {"cls": n_images}, size=(w, h)) writes random RGB PNGs."""

    def make(root: Path, counts: dict[str, int], size=(12, 10)) -> Path:
        rng = np.random.default_rng(0)
        for cls, n in counts.items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / cls / f"{i}.png")
        return root

    return make
