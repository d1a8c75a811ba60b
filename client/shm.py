"""Input tensors through system shared memory: the server reads them without a copy on the wire.

Only for a server on this host. Registering regions is an admin API with its own key: the server
answers only requests carrying its shared-memory key, taken from $TRITON_SHM_KEY.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading

import numpy as np
import tritonclient.utils.shared_memory as shm

from client.connection import SHM_KEY_ENV, ClientError, Triton, describe, is_restricted


class SharedInputs:
    """One region per worker thread (each has one request in flight), all released by close()."""

    def __init__(self, triton: Triton, byte_size: int):
        self.triton = triton
        self.byte_size = byte_size
        # Unique per run: other clients may use the same server at the same time.
        self.prefix = f"client_{os.getpid()}_{secrets.token_hex(4)}"
        self._local = threading.local()
        self._regions: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def _region(self) -> tuple[str, object]:
        region = getattr(self._local, "region", None)
        if region is not None:
            return region
        with self._lock:
            name = f"{self.prefix}_{len(self._regions)}"
            handle = shm.create_shared_memory_region(name, f"/{name}", self.byte_size)
            self._regions.append((name, handle))
        try:
            self.triton.call(
                "register_system_shared_memory",
                name,
                f"/{name}",
                self.byte_size,
                headers=self.triton.shm_headers(),
            )
        except Exception as e:
            raise self._refused(e) from None
        self._local.region = (name, handle)
        return self._local.region

    def _refused(self, e: Exception) -> ClientError:
        if is_restricted(e):
            have = "does not match" if os.environ.get(SHM_KEY_ENV) else "is not set"
            return ClientError(
                f"the server refuses the shared-memory API: it needs its shared-memory key and "
                f"${SHM_KEY_ENV} {have}"
            )
        return ClientError(f"cannot register shared memory with {self.triton.where}: {describe(e)}")

    def input(self, name: str, array: np.ndarray, datatype: str):
        """An input tensor whose data sits in this thread's region."""
        if array.nbytes > self.byte_size:
            raise ValueError(f"{array.nbytes} bytes do not fit the {self.byte_size}-byte region")
        region, handle = self._region()
        shm.set_shared_memory_region(handle, [np.ascontiguousarray(array)])
        return self.triton.input_from_shm(name, array.shape, datatype, region, array.nbytes)

    def close(self) -> None:
        """Unregister and free every region; best effort, so an earlier error stays the one told."""
        with self._lock:
            regions, self._regions = self._regions, []
        for name, handle in regions:
            with contextlib.suppress(Exception):
                self.triton.call(
                    "unregister_system_shared_memory",
                    name,
                    retry=False,
                    headers=self.triton.shm_headers(),
                )
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(handle)

    def __enter__(self) -> SharedInputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
