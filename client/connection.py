"""One Triton connection for the client tools: HTTP or gRPC, one server or several replicas,
bounded retries, one-line errors.

Imports tritonclient and nothing heavier, so `client/infer.py` stays light on client hosts.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import itertools
import os
import threading
import time
from dataclasses import dataclass

from tritonclient.utils import InferenceServerException

from contract.spec import DTYPES

# Mirrors serve.server: a client host need not have the serve stage installed.
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_HEADER = "admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
SHM_KEY_ENV = "TRITON_SHM_KEY"
SHM_HEADER = "shm-key"
GRPC_SHM_HEADER = f"triton-grpc-protocol-{SHM_HEADER}"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
# Worth another try: the server is starting, overloaded, or briefly out of reach.
_TRANSIENT = {"502", "503", "504", "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
_NOT_FOUND = {"404", "StatusCode.NOT_FOUND"}
# How a restarting server, or a crashed Python stub until its model reloads, answers.
_RESTARTING = ("is not healthy", "Server is stopping", "has no available versions")
START_HINT = "start it with `make serve`"
PROBE_S = 1.0  # how often a replica out of service is asked whether it is ready again


class ClientError(RuntimeError):
    """Ends the run; the message is one line, printed as `error: <message>`."""


class Rejected(Exception):
    """The server refused one request (its input); other requests may still succeed."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe(e: BaseException) -> str:
    """The error's own words on one line (tritonclient's str() adds a status prefix)."""
    if isinstance(e, InferenceServerException):
        return one_line(e.message() or e.status() or "unknown server error")
    return one_line(e) or type(e).__name__


def _status(e: BaseException) -> str:
    return str(e.status()) if isinstance(e, InferenceServerException) else ""


def is_restricted(e: BaseException) -> bool:
    return isinstance(e, InferenceServerException) and "restricted" in (e.message() or "")


def is_transient(e: BaseException) -> bool:
    if isinstance(e, InferenceServerException):
        # gRPC reports a locked admin API as UNAVAILABLE: retrying cannot unlock it.
        if is_restricted(e):
            return False
        restarting = any(w in (e.message() or "") for w in _RESTARTING)
        return _status(e) in _TRANSIENT or _status(e) == "StatusCode.CANCELLED" or restarting
    # geventhttpclient: refused, reset, timed out, no route (OSError); a connection the
    # server closed mid-request while shutting down (HTTPException)
    return isinstance(e, OSError | http.client.HTTPException)


@dataclass(frozen=True)
class Policy:
    timeout: float = 30.0  # seconds per call, connecting included
    # Further attempts after a transient failure. Four wait 7.5 s in all: enough to bridge
    # serve's supervisor restarting tritonserver (0.5 s, then Triton's start, measured at
    # 0.6-1.7 s, and 3.6 s on a VM whose host had slowed it; three retries, 3.5 s, lost
    # requests there).
    retries: int = 4
    backoff: float = 0.5  # seconds before the first retry, doubled for each next one

    @property
    def window(self) -> float:
        """Seconds of backoff a request waits through before it is given up."""
        return self.backoff * (2**self.retries - 1)


# The tensors a classifier may take (contract.spec.DTYPES), by their config spelling.
TENSOR_DTYPES = {f"TYPE_{name}": dtype for dtype, name in DTYPES.items()}


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # config spelling: TYPE_FP32, TYPE_UINT8, TYPE_STRING
    dims: tuple[int, ...]
    labeled: bool = False  # has label_filename: the classification extension names classes


@dataclass(frozen=True)
class ModelInfo:
    """The parts of a model config the client acts on, from either protocol's JSON."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[str, ...]  # an ensemble's models, in order; empty otherwise

    @classmethod
    def from_config(cls, config: dict) -> ModelInfo:
        def tensors(key: str) -> tuple[Tensor, ...]:
            return tuple(
                Tensor(
                    t["name"],
                    t.get("data_type", ""),
                    tuple(int(d) for d in t.get("dims", [])),  # gRPC JSON spells int64 as str
                    bool(t.get("label_filename")),
                )
                for t in config.get(key, [])
            )

        steps = config.get("ensemble_scheduling", {}).get("step", [])
        return cls(
            name=config["name"],
            platform=config.get("platform", ""),
            max_batch_size=int(config.get("max_batch_size", 0)),
            inputs=tensors("input"),
            outputs=tensors("output"),
            steps=tuple(s["model_name"] for s in steps),
        )

    @property
    def takes_bytes(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].data_type == "TYPE_STRING"

    @property
    def takes_tensor(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].data_type in TENSOR_DTYPES

    @property
    def tensor_dtype(self) -> str:
        """The contract's dtype of the tensor this model takes: float32 or uint8 pixels."""
        return TENSOR_DTYPES[self.inputs[0].data_type]

    @property
    def classifier(self) -> str | None:
        """The model an ensemble ends in: the one whose scores it returns."""
        return self.steps[-1] if self.steps else None


class Triton:
    """tritonclient for `protocol` on one server, or on replicas (`url` "A,B,..."): one client
    per thread and replica, every call under `policy`.

    Calls go round-robin to the replicas in service. A replica whose call fails with a transient
    error leaves service at once and the call moves on to the next one; it comes back once its
    health endpoints (server ready, and every model this client has sent to) say so, looked at
    every PROBE_S seconds. With every replica out, calls wait with backoff as with one server.
    """

    def __init__(self, url: str, protocol: str = "http", policy: Policy = Policy()):
        self.url = url
        self.urls = [u.strip() for u in url.split(",") if u.strip()]
        self.protocol = protocol
        self.policy = policy
        self.module = importlib.import_module(f"tritonclient.{protocol}")
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._out: dict[str, float] = {}  # replica out of service -> when to look at it again
        self._turn = itertools.count()
        self._models: set[str] = set()  # inferred on: a replica is back once they are ready

    @property
    def where(self) -> str:
        return f"{self.protocol}://{self.url}"

    @property
    def in_service(self) -> list[str]:
        with self._lock:
            return [u for u in self.urls if u not in self._out]

    def _client(self, url: str):
        # tritonclient's HTTP client is not thread-safe: each worker thread gets its own.
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(url)
        if client is None:
            if self.protocol == "http":
                t = self.policy.timeout
                client = self.module.InferenceServerClient(
                    url, connection_timeout=t, network_timeout=t
                )
            else:
                client = self.module.InferenceServerClient(url)
            clients[url] = client
            with self._lock:
                self._clients.append(client)
        return client

    def _leave(self, url: str) -> None:
        with self._lock:
            self._out[url] = time.monotonic() + PROBE_S

    def _due(self) -> list[str]:
        """Replicas out of service whose pause is over, claimed by this thread for a look."""
        if len(self.urls) == 1:
            return []  # one server: the next call is the look
        now = time.monotonic()
        with self._lock:
            due = [u for u, when in self._out.items() if when <= now]
            for url in due:
                self._out[url] = now + PROBE_S
        return due

    def _ready(self, url: str) -> bool:
        """The replica's health endpoints: server ready, and ready for this client's models."""
        kwargs = {"client_timeout": PROBE_S} if self.protocol == "grpc" else {}
        with self._lock:
            models = sorted(self._models)
        try:
            client = self._client(url)
            return client.is_server_ready(**kwargs) and all(
                client.is_model_ready(m, **kwargs) for m in models
            )
        except Exception:  # unreachable or refusing: still out
            return False

    def _pick(self) -> str:
        for url in self._due():
            if self._ready(url):
                with self._lock:
                    self._out.pop(url, None)
        with self._lock:
            serving = [u for u in self.urls if u not in self._out]
            if serving:
                return serving[next(self._turn) % len(serving)]
            return min(self._out, key=self._out.get)  # all out: the one looked at longest ago

    def call(self, method: str, *args, retry: bool = True, **kwargs):
        """`client.<method>(...)` on a replica in service; a transient failure moves it to the
        next one, or, with none left, retries with exponential backoff."""
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.policy.timeout
            if method in ("get_model_config", "get_inference_statistics"):
                kwargs["as_json"] = True
        if method == "infer":
            with self._lock:
                self._models.add(args[0])
        for attempt in itertools.count():
            url = self._pick()
            try:
                result = getattr(self._client(url), method)(*args, **kwargs)
            except Exception as e:
                if not is_transient(e):
                    raise
                self._leave(url)
                if not retry or attempt >= self.policy.retries:
                    raise
            else:
                with self._lock:
                    self._out.pop(url, None)  # an answer is as good as a look
                return result
            if not self.in_service:
                time.sleep(self.policy.backoff * 2**attempt)

    def unreachable(self, e: BaseException) -> ClientError:
        return ClientError(f"server unreachable at {self.where} ({describe(e)}): {START_HINT}")

    @contextlib.contextmanager
    def errors(self, doing: str):
        """Turn what a call raises into a ClientError that says what we were doing."""
        try:
            yield
        except ClientError:
            raise
        except Exception as e:
            if is_transient(e):
                raise self.unreachable(e) from None
            raise ClientError(f"{doing}: {describe(e)}") from None

    def check_server(self) -> None:
        with self.errors(f"asking {self.where} whether it is live"):
            live = self.call("is_server_live")
        if not live:
            raise ClientError(f"the server at {self.where} is not live: {START_HINT}")

    def ready_models(self) -> list[str]:
        """Names of the ready models, from the statistics API (open without the admin key)."""
        with self.errors("listing the server's models"):
            stats = self.call("get_inference_statistics")
        return sorted({m["name"] for m in stats.get("model_stats", [])})

    def model(self, name: str) -> ModelInfo:
        with self.errors(f"asking for model '{name}'"):
            ready = self.call("is_model_ready", name)
        if not ready:
            available = ", ".join(self.ready_models()) or "none"
            raise ClientError(
                f"model '{name}' is not ready on {self.where}; ready models: {available}"
            )
        with self.errors(f"reading the config of model '{name}'"):
            config = self.call("get_model_config", name)
        return ModelInfo.from_config(config.get("config", config))

    def models(self) -> list[ModelInfo]:
        return [self.model(name) for name in self.ready_models()]

    def input(self, name: str, array, datatype: str):
        tensor = self.module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def input_from_shm(self, name: str, shape, datatype: str, region: str, byte_size: int):
        tensor = self.module.InferInput(name, list(shape), datatype)
        tensor.set_shared_memory(region, byte_size)
        return tensor

    def output(self, name: str, class_count: int = 0):
        return self.module.InferRequestedOutput(name, class_count=class_count)

    def infer(self, model: str, inputs: list, outputs: list):
        """The result; Rejected if the server refuses this request, ClientError if it is gone."""
        try:
            return self.call("infer", model, inputs, outputs=outputs)
        except Exception as e:
            if is_transient(e):
                raise self.unreachable(e) from None
            if _status(e) in _NOT_FOUND:
                raise ClientError(f"model '{model}': {describe(e)}") from None
            if isinstance(e, InferenceServerException):
                raise Rejected(describe(e)) from None
            raise

    def admin_headers(self) -> dict[str, str] | None:
        """Model control's key from $TRITON_ADMIN_KEY, in this protocol's header."""
        key = os.environ.get(ADMIN_KEY_ENV)
        if not key:
            return None
        return {ADMIN_HEADER if self.protocol == "http" else GRPC_ADMIN_HEADER: key}

    def shm_headers(self) -> dict[str, str] | None:
        """Shared memory's key from $TRITON_SHM_KEY, in this protocol's header."""
        key = os.environ.get(SHM_KEY_ENV)
        if not key:
            return None
        return {SHM_HEADER if self.protocol == "http" else GRPC_SHM_HEADER: key}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
