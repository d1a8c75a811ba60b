"""The bad inputs: one small function each, returning (handled, detail).

Valid but unusual images ("answer") are handled when the server's logits match
contract.preprocess + in-process ONNX Runtime. Bad requests ("error") are handled when the
request gets an error that names the problem. CLI inputs ("cli") are handled when the command
exits non-zero with a one-line message and no traceback. chaos.py checks the server's health
after every kind.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from contract import preprocess
from contract.spec import DTYPES
from reliability.deploy import Deployment
from reliability.reference import Reference, encode, sample_image
from serve.repository import IMAGE_INPUT
from serve.server import TritonServer, free_port

ROOT = Path(__file__).resolve().parents[1]
Outcome = tuple[bool, str]
CLI_TIMEOUT_S = 120


@dataclass
class Context:
    server: TritonServer
    deployment: Deployment
    reference: Reference
    work: Path  # scratch folder for files the CLI kinds need

    def __post_init__(self):
        self.http = httpclient.InferenceServerClient(self.server.http_url, network_timeout=60)
        self.grpc = grpcclient.InferenceServerClient(self.server.grpc_url)
        self.rng = np.random.default_rng(0)
        self.spec = self.deployment.spec

    def image(self, size: tuple[int, int] | None = None, mode: str = "RGB") -> Image.Image:
        return sample_image(self.rng, size or (self.spec.width, self.spec.height), mode)

    def close(self) -> None:
        self.http.close()
        self.grpc.close()


@dataclass(frozen=True)
class Kind:
    name: str
    group: str  # image | tensor | protocol | cli
    expect: str  # answer | error
    check: Callable[[Context], Outcome]


def _one_line(text: object, width: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- requests -----------------------------------------------------------------------------


def send_image(ctx: Context, data: bytes, client=None) -> np.ndarray:
    module = grpcclient if client is ctx.grpc else httpclient
    tensor = module.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    result = (client or ctx.http).infer(ctx.deployment.ensemble, [tensor])
    return result.as_numpy(ctx.spec.output_name)[0]


def send_tensor(
    ctx: Context, array: np.ndarray, datatype: str = "", *, name="", model="", version=""
) -> np.ndarray:
    """`array` to the classifier as `datatype` (default: the one it takes, FP32 or UINT8)."""
    datatype = datatype or DTYPES[ctx.spec.dtype]
    tensor = httpclient.InferInput(name or ctx.spec.input_name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = ctx.http.infer(model or ctx.deployment.classifier, [tensor], model_version=version)
    return result.as_numpy(ctx.spec.output_name)


def answers(ctx: Context, data: bytes, note: str = "") -> Outcome:
    """Handled if the server's logits for `data` are the in-process ones."""
    try:
        got = send_image(ctx, data)
    except InferenceServerException as e:
        return False, f"refused a valid image: {_one_line(e.message())}"
    want = ctx.reference.of_image(data)
    diff = float(np.abs(got - want).max())
    label = ctx.spec.labels[int(np.argmax(want))]
    if np.argmax(got) != np.argmax(want) or not diff <= 1e-3:
        return False, f"answered top-1 {int(np.argmax(got))}, in-process {label} (diff {diff:.1e})"
    return True, f"'{label}' as in process (max diff {diff:.0e}){note}"


def refused(call: Callable[[], object], *words: str) -> Outcome:
    """Handled if `call` raises a server error whose message holds one of `words`."""
    try:
        result = call()
    except InferenceServerException as e:
        message = _one_line(e.message() or e.status() or "")
        clear = any(w.lower() in message.lower() for w in words)
        return clear, message if clear else f"unclear error: {message}"
    return False, f"accepted: {_one_line(result, 100)}"


# --- valid images that must be classified -----------------------------------------------


def one_pixel(ctx: Context) -> Outcome:
    return answers(ctx, encode(ctx.image((1, 1), "L")))


def cmyk_jpeg(ctx: Context) -> Outcome:
    return answers(ctx, encode(ctx.image().convert("CMYK"), "JPEG", quality=95))


def gray16_png(ctx: Context) -> Outcome:
    wide = np.asarray(ctx.image(mode="L"), dtype=np.uint16) * 257
    data = encode(Image.fromarray(wide))
    return answers(ctx, data, f"; sent as {Image.open(io.BytesIO(data)).mode}")


def palette_png(ctx: Context) -> Outcome:
    return answers(ctx, encode(ctx.image().convert("P", palette=Image.Palette.ADAPTIVE)))


def alpha_png(ctx: Context) -> Outcome:
    rgba = ctx.image().convert("RGBA")
    rgba.putalpha(ctx.image(mode="L"))
    return answers(ctx, encode(rgba))


def exif_rotated_jpeg(ctx: Context) -> Outcome:
    w, h = ctx.spec.width, ctx.spec.height
    img = ctx.image((w * 2, h))  # not square, so a missed rotation changes the input
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(img, "JPEG", quality=95, exif=exif)
    plain = encode(img, "JPEG", quality=95)
    if np.allclose(preprocess(data, ctx.spec), preprocess(plain, ctx.spec)):
        return False, "the EXIF orientation made no difference to the model input"
    return answers(ctx, data, "; EXIF orientation 6 applied")


# --- image bytes that must be refused ----------------------------------------------------


def non_image_bytes(ctx: Context) -> Outcome:
    data = b"%PDF-1.4\n% not an image at all\n" * 8
    return refused(lambda: send_image(ctx, data), "not a readable image")


def empty_bytes(ctx: Context) -> Outcome:
    return refused(lambda: send_image(ctx, b""), "empty")


def truncated_png(ctx: Context) -> Outcome:
    data = encode(ctx.image((64, 64)))
    return refused(lambda: send_image(ctx, data[: len(data) // 2]), "truncated", "corrupt")


def truncated_jpeg(ctx: Context) -> Outcome:
    data = encode(ctx.image((64, 64)), "JPEG", quality=95)
    return refused(lambda: send_image(ctx, data[: len(data) // 2]), "truncated", "corrupt")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` RGB pixels over a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + _png_chunk(b"IEND", b"")
    )


def decompression_bomb(ctx: Context) -> Outcome:
    """900 MP: 2.7 GB if it were decoded."""
    return refused(lambda: send_image(ctx, bomb_png(30000, 30000)), "decompression bomb")


def mixed_batch(ctx: Context) -> Outcome:
    """Two images in one request, the second broken: the error must say which."""
    tensor = httpclient.InferInput(IMAGE_INPUT, [2, 1], "BYTES")
    batch = [[encode(ctx.image())], [b"garbage"]]
    tensor.set_data_from_numpy(np.array(batch, dtype=np.object_))
    return refused(lambda: ctx.http.infer(ctx.deployment.ensemble, [tensor]), "image 1")


def grpc_non_image(ctx: Context) -> Outcome:
    return refused(lambda: send_image(ctx, b"\x00\x01 not an image", ctx.grpc), "not a readable")


def oversized_body(ctx: Context) -> Outcome:
    """80 MB in one request: Triton 2.51 has no HTTP body limit, so the model must refuse it."""
    data = bytes(80 * 2**20)
    return refused(lambda: send_image(ctx, data), "not a readable image")


# --- tensors that must be refused ---------------------------------------------------------


def _x(ctx: Context, batch: int = 1, dtype: str = "") -> np.ndarray:
    """Zeros of the classifier's input shape, of its dtype unless told."""
    shape = (batch, ctx.spec.channels, ctx.spec.height, ctx.spec.width)
    return np.zeros(shape, dtype or ctx.spec.dtype)


def wrong_dtype(ctx: Context) -> Outcome:
    return refused(lambda: send_tensor(ctx, _x(ctx).astype(np.float64), "FP64"), "data-type")


def bytes_to_tensor_model(ctx: Context) -> Outcome:
    array = np.array([[b"abc"]], dtype=np.object_)
    return refused(lambda: send_tensor(ctx, array, "BYTES"), "data-type", "shape")


def wrong_rank(ctx: Context) -> Outcome:
    return refused(lambda: send_tensor(ctx, _x(ctx)[0]), "shape")


def wrong_shape(ctx: Context) -> Outcome:
    bigger = np.zeros((1, ctx.spec.channels, ctx.spec.height + 4, ctx.spec.width), ctx.spec.dtype)
    return refused(lambda: send_tensor(ctx, bigger), "shape")


def wrong_input_name(ctx: Context) -> Outcome:
    return refused(lambda: send_tensor(ctx, _x(ctx), name="pixels"), "unexpected inference input")


def batch_above_max(ctx: Context) -> Outcome:
    limit = int(ctx.http.get_model_config(ctx.deployment.classifier)["max_batch_size"])
    return refused(lambda: send_tensor(ctx, _x(ctx, limit + 1)), "batch-size", "batch size")


# FP32 either way: a float model's backend refuses the values; a model taking uint8 pixels
# cannot be sent them at all, and Triton refuses the data type.
def nan_values(ctx: Context) -> Outcome:
    nan = _x(ctx, dtype="float32") + np.nan
    return refused(lambda: send_tensor(ctx, nan, "FP32"), "nan", "finite", "data-type")


def inf_values(ctx: Context) -> Outcome:
    inf = _x(ctx, dtype="float32") + np.inf
    return refused(lambda: send_tensor(ctx, inf, "FP32"), "inf", "finite", "data-type")


def unknown_model(ctx: Context) -> Outcome:
    return refused(lambda: send_tensor(ctx, _x(ctx), model="no_such_model"), "unknown model")


def unknown_version(ctx: Context) -> Outcome:
    return refused(lambda: send_tensor(ctx, _x(ctx), version="7"), "version 7")


# --- protocol-level garbage ---------------------------------------------------------------


def _post(ctx: Context, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    host, port = ctx.server.http_url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", f"/v2/models/{ctx.deployment.ensemble}/infer", body, headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _http_error(status: int, body: str, *words: str) -> Outcome:
    clear = status >= 400 and '"error"' in body and any(w in body.lower() for w in words)
    return clear, f"HTTP {status}: {_one_line(body, 140)}"


def malformed_json(ctx: Context) -> Outcome:
    status, body = _post(ctx, b'{"inputs": [{"name": "image", "shape": [1,')
    return _http_error(status, body, "json", "parse")


def binary_size_mismatch(ctx: Context) -> Outcome:
    """The header promises more binary data than the body holds."""
    header = (
        f'{{"inputs":[{{"name":"{IMAGE_INPUT}","shape":[1,1],"datatype":"BYTES",'
        '"parameters":{"binary_data_size":1000000}}]}'
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    status, body = _post(ctx, header + b"\x10\x00\x00\x00short", headers)
    return _http_error(status, body, "size", "byte", "expected", "unexpected")


def model_being_unloaded(ctx: Context) -> Outcome:
    """Requests keep coming while the classifier is unloaded, then loaded again."""
    stop, replies = threading.Event(), []  # None for an answer, else the error

    def hammer() -> None:
        client = httpclient.InferenceServerClient(ctx.server.http_url, network_timeout=10)
        x = _x(ctx)
        tensor = httpclient.InferInput(ctx.spec.input_name, list(x.shape), DTYPES[ctx.spec.dtype])
        tensor.set_data_from_numpy(x)
        try:
            while not stop.is_set():
                try:
                    client.infer(ctx.deployment.classifier, [tensor])
                    replies.append(None)
                except InferenceServerException as e:
                    replies.append(_one_line(e.message()))
                    time.sleep(0.005)
        finally:
            client.close()

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    time.sleep(0.3)
    admin = ctx.server.admin_headers
    ctx.http.unload_model(ctx.deployment.classifier, headers=admin)
    time.sleep(0.5)
    stop.set()
    thread.join(15)
    ctx.http.load_model(ctx.deployment.classifier, headers=admin)
    errors = [r for r in replies if r is not None]
    words = ("unknown model", "not ready", "unavailable", "no available versions", "not found")
    unclear = [e for e in errors if not any(w in e.lower() for w in words)]
    if thread.is_alive():
        return False, "a request hung while the model was unloaded"
    if unclear:
        return False, f"unclear error: {unclear[0]}"
    answered = len(replies) - len(errors)
    return bool(errors), f"{answered} answered, then {len(errors)} refused: {errors[-1:]}"


# --- CLI inputs ----------------------------------------------------------------------------


def _cli(ctx: Context, argv: list[str], *words: str) -> Outcome:
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    err = proc.stderr.strip()
    last = err.splitlines()[-1] if err else "(no message)"
    if proc.returncode == 0:
        return False, f"exit 0: {_one_line(last)}"
    if "Traceback" in err:
        return False, f"exit {proc.returncode} with a traceback: {_one_line(last)}"
    clear = any(w.lower() in err.lower() for w in words)
    return clear, f"exit {proc.returncode}: {_one_line(last)}"


def _file(ctx: Context, name: str, text: str) -> Path:
    path = ctx.work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _png(ctx: Context) -> Path:
    path = ctx.work / "img.png"
    ctx.image().save(path)
    return path


def _no_images(ctx: Context) -> Path:
    """Two class folders that hold only text files."""
    root = ctx.work / "no_images"
    for label in ("a", "b"):
        _file(ctx, f"no_images/{label}/notes.txt", "not an image\n")
    return root


BAD_YAML = "optim:\n  lr: [0.1\n  epochs: 2\n"
INFER = "client/infer.py"


def _url(ctx: Context) -> list[str]:
    return ["--url", ctx.server.http_url, "--retries", "0"]


CLI_KINDS: list[tuple[str, Callable[[Context], list[str]], tuple[str, ...]]] = [
    ("infer: missing file", lambda c: [INFER, str(c.work / "nope.png"), *_url(c)], ("no such",)),
    ("infer: folder without images", lambda c: [INFER, str(_no_images(c)), *_url(c)],
     ("not a readable image",)),
    ("infer: bad flag", lambda c: [INFER, "x.png", "--top-k", "0"], ("must be > 0",)),
    ("infer: unknown model", lambda c: [INFER, str(_png(c)), *_url(c), "--model", "nope"],
     ("not ready",)),
    ("infer: server down", lambda c: [INFER, str(_png(c)), "--url",
     f"127.0.0.1:{free_port()}", "--retries", "0"], ("unreachable",)),
    ("verify: missing run", lambda c: ["client/verify.py", "--run", str(c.work / "nope")],
     ("not found",)),
    ("train: missing data", lambda c: ["-m", "train", "--data", str(c.work / "nope")],
     ("not found",)),
    ("train: folder without images", lambda c: ["-m", "train", "--data", str(_no_images(c)),
     f"out_dir={c.work / 'runs'}"], ("no readable images", "not readable")),
    ("train: bad YAML", lambda c: ["-m", "train", "--config", str(_file(c, "bad.yaml", BAD_YAML))],
     ("not valid YAML",)),
    ("train: unknown config key", lambda c: ["-m", "train", "optim.learning_rate=0.1"],
     ("unknown config key",)),
    ("train: bad flag", lambda c: ["-m", "train", "--epochs", "many"], ("invalid int",)),
    ("optimize: missing run", lambda c: ["-m", "optimize", "--run", str(c.work / "nope")],
     ("not found",)),
    ("optimize: bad YAML", lambda c: ["-m", "optimize", "--run", "runs/default", "--config",
     str(_file(c, "bad.yaml", BAD_YAML))], ("not valid YAML",)),
    ("optimize: unknown config key", lambda c: ["-m", "optimize", "--run", "runs/default",
     "prune.amount=0.5"], ("unknown config key",)),
    ("serve: missing repository", lambda c: ["-m", "serve", "--repo", str(c.work / "nope")],
     ("does not exist",)),
    ("serve: repository without models", lambda c: ["-m", "serve", "--repo",
     str(_no_images(c))], ("no models",)),
    ("serve: bad flag", lambda c: ["-m", "serve", "--http-port", "eighty"], ("invalid int",)),
    ("serve: port taken", lambda c: ["-m", "serve", "--repo", str(c.deployment.repo),
     "--http-port", str(c.server.ports["http"])], ("is taken",)),
]  # fmt: skip
BENCH_KINDS: list[tuple[str, Callable[[Context], list[str]], tuple[str, ...]]] = [
    ("bench: missing repository", lambda c: ["-m", "bench", "--repo", str(c.work / "nope")],
     ("does not exist",)),
    ("bench: bad YAML", lambda c: ["-m", "bench", "--config", str(_file(c, "bad.yaml",
     BAD_YAML))], ("not valid YAML",)),
    ("bench: unknown config key", lambda c: ["-m", "bench", "served.concurrency_max=3"],
     ("unknown config key",)),
]  # fmt: skip


def _cli_kind(name: str, argv: Callable[[Context], list[str]], words: tuple[str, ...]) -> Kind:
    return Kind(name, "cli", "error", lambda ctx: _cli(ctx, argv(ctx), *words))


SERVER_KINDS = [
    Kind("1x1 image", "image", "answer", one_pixel),
    Kind("CMYK JPEG", "image", "answer", cmyk_jpeg),
    Kind("16-bit PNG", "image", "answer", gray16_png),
    Kind("palette PNG", "image", "answer", palette_png),
    Kind("alpha PNG", "image", "answer", alpha_png),
    Kind("EXIF-rotated JPEG", "image", "answer", exif_rotated_jpeg),
    Kind("non-image bytes", "image", "error", non_image_bytes),
    Kind("empty bytes", "image", "error", empty_bytes),
    Kind("truncated PNG", "image", "error", truncated_png),
    Kind("truncated JPEG", "image", "error", truncated_jpeg),
    Kind("decompression bomb", "image", "error", decompression_bomb),
    Kind("batch with one bad image", "image", "error", mixed_batch),
    Kind("non-image bytes over gRPC", "image", "error", grpc_non_image),
    Kind("oversized body (80 MB)", "protocol", "error", oversized_body),
    Kind("wrong tensor dtype", "tensor", "error", wrong_dtype),
    Kind("bytes to the tensor model", "tensor", "error", bytes_to_tensor_model),
    Kind("wrong rank", "tensor", "error", wrong_rank),
    Kind("wrong shape", "tensor", "error", wrong_shape),
    Kind("wrong input name", "tensor", "error", wrong_input_name),
    Kind("batch above max_batch_size", "tensor", "error", batch_above_max),
    Kind("NaN values", "tensor", "error", nan_values),
    Kind("Inf values", "tensor", "error", inf_values),
    Kind("unknown model", "tensor", "error", unknown_model),
    Kind("unknown version", "tensor", "error", unknown_version),
    Kind("malformed JSON", "protocol", "error", malformed_json),
    Kind("binary size mismatch", "protocol", "error", binary_size_mismatch),
    Kind("model being unloaded", "protocol", "error", model_being_unloaded),
]


def all_kinds() -> list[Kind]:
    cli = CLI_KINDS + (BENCH_KINDS if importlib.util.find_spec("bench") else [])
    return SERVER_KINDS + [_cli_kind(*entry) for entry in cli]
