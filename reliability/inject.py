"""`python -m reliability.inject {exception,pause} OPTIMIZE_ARGS...`: `python -m optimize`
with a fault in the middle of writing the model repository, after its first model is written:
`exception` raises there; `pause` holds the half-written staged repository open for up to
PAUSE_S, so a SIGTERM sent from outside lands mid-write every time (an unpaused write lasts
milliseconds, and a watcher on 2 busy cores can miss it)."""

from __future__ import annotations

import sys
import time

import optimize.repository
from optimize.run import main

PAUSE_S = 60.0


class InjectedFault(RuntimeError):
    pass


def _raise(name: str) -> None:
    raise InjectedFault(f"injected while writing {name}")


def _pause(name: str) -> None:
    time.sleep(PAUSE_S)  # optimize's SIGTERM handler interrupts this


FAULTS = {"exception": _raise, "pause": _pause}


def _after_first(write_model, fault):
    written = []

    def patched(root, model, spec, cfg):
        if written:
            fault(model.name)
        write_model(root, model, spec, cfg)
        written.append(model.name)

    return patched


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        sys.exit(f"usage: python -m reliability.inject {{{','.join(FAULTS)}}} OPTIMIZE_ARGS...")
    fault = FAULTS[sys.argv[1]]
    optimize.repository.write_model = _after_first(optimize.repository.write_model, fault)
    sys.exit(main(sys.argv[2:]))
