"""deploy/k8s fixtures: every kustomization rendered once."""

from __future__ import annotations

import pytest
from deploy_helpers import K8S, KUSTOMIZATIONS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """{"overlays/cpu": [objects...], ...} as `kubectl kustomize` prints them."""
    return {name: render(K8S, name) for name in KUSTOMIZATIONS}
