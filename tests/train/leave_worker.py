"""Run under torchrun with 2 processes: rank 1 fails and leaves while rank 0 still works.

Rank 1 calls `shutdown(finished=False)` and then marks `<out>/left`; rank 0 waits for that
mark (up to WAIT_S) before it reaches any barrier, and writes whether it came. A rank that
failed must not wait for its peers: they may be in a collective it never reaches.
"""

import sys
import time
from pathlib import Path

import torch.distributed as dist

from train import distributed

WAIT_S = 20.0

if __name__ == "__main__":
    out = Path(sys.argv[1])
    distributed.init()
    if distributed.rank() == 1:
        distributed.shutdown(finished=False)
        (out / "left").touch()
    else:
        deadline = time.monotonic() + WAIT_S
        while not (out / "left").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        came = (out / "left").exists()
        (out / "rank0").write_text("left first" if came else "rank 1 still waited")
        if not came:
            dist.barrier()  # let a rank 1 that waits after all go
        dist.destroy_process_group()
