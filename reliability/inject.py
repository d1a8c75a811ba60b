"""`python -m reliability.inject OPTIMIZE_ARGS...`: `python -m optimize`, with an exception
raised in the middle of writing the model repository (after its first model is written)."""

from __future__ import annotations

import sys

import optimize.repository
from optimize.run import main


class InjectedFault(RuntimeError):
    pass


def _fail_after_first(write_model):
    written = []

    def patched(root, model, spec, cfg):
        if written:
            raise InjectedFault(f"injected while writing {model.name}")
        write_model(root, model, spec, cfg)
        written.append(model.name)

    return patched


if __name__ == "__main__":
    optimize.repository.write_model = _fail_after_first(optimize.repository.write_model)
    sys.exit(main(sys.argv[1:]))
