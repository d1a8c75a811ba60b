"""client/infer.py against a real tritonserver; answers checked against in-process ONNX Runtime."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from client_helpers import (
    ENSEMBLE,
    json_lines,
    random_image,
    reference_top,
    run_infer,
    write_png,
)
from serve_helpers import CLASSIFIER, PROJECT_ROOT, SHM_KEY, SPEC

from client.connection import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    GRPC_ADMIN_HEADER,
    GRPC_SHM_HEADER,
    SHM_HEADER,
    SHM_KEY_ENV,
    Triton,
)
from client.infer import Classifier
from contract import ModelSpec, save_spec
from serve.server import free_port

SORTED = ["a.png", "b.png", "sub/c.png", "sub/deeper/d.png", "sub/e.png", "sub/rgb.png", "z/f.png"]


def url(server, protocol: str = "http") -> str:
    return server.http_url if protocol == "http" else server.grpc_url


def test_admin_constants_mirror_the_serve_stage():
    from serve import server

    assert (ADMIN_KEY_ENV, ADMIN_HEADER, GRPC_ADMIN_HEADER) == (
        server.ADMIN_KEY_ENV,
        server.ADMIN_HEADER,
        server.GRPC_ADMIN_HEADER,
    )
    assert (SHM_KEY_ENV, SHM_HEADER, GRPC_SHM_HEADER) == (
        server.SHM_KEY_ENV,
        server.SHM_HEADER,
        server.GRPC_SHM_HEADER,
    )


def test_client_never_imports_torch_or_onnxruntime(images):
    """A real run of the script (server unreachable) with every import it makes logged."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "client/infer.py", str(images / "a.png")]
        + ["--url", f"127.0.0.1:{free_port()}", "--retries", "0"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert result.returncode == 1 and "tritonclient" in imported and "contract" in imported
    assert not imported & {"torch", "onnxruntime", "serve", "train", "optimize"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x.png", "--shared-memory"], "--shared-memory needs --send tensor"),
        (["x.png", "--top-k", "0"], "argument --top-k: must be > 0"),
        (["x.png", "--batch-size", "two"], "argument --batch-size: invalid int value"),
        (["x.png", "--url", "http://127.0.0.1:8000"], "--url takes host:port"),
        (["x.png", "--url", "127.0.0.1:8000,"], "--url takes host:port (or A,B,..."),
        (
            ["x.png", "--url", "a:1,b:2", "--send", "tensor", "--shared-memory"],
            "--shared-memory needs one server",
        ),
        (["x.png", "--send", "pixels"], "argument --send: invalid choice"),
        (["x.png", "--spec", "s.json"], "--spec applies to --send tensor only"),
        ([], "the following arguments are required: IMAGE_OR_DIR"),
    ],
)
def test_bad_flags_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        run_infer(capsys, *argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_nothing_to_classify_is_an_error(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run_infer(capsys, tmp_path / "empty", tmp_path / "missing.png")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"skipped {tmp_path / 'empty'}: no files in this folder",
        f"skipped {tmp_path / 'missing.png'}: no such file or folder",
        "error: no files to classify",
    ]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_fails_fast_with_one_line(capsys, images, protocol):
    port = free_port()
    started = time.monotonic()
    code, out, err = run_infer(
        capsys, images, "--protocol", protocol, "--url", f"127.0.0.1:{port}",
        "--retries", "2", "--backoff", "0.05",
    )  # fmt: skip
    assert code == 1 and out == ""
    assert time.monotonic() - started < 10
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: server unreachable at {protocol}://127.0.0.1:{port} (")
    assert "make serve" in err


@pytest.mark.slow
def test_folder_table_is_sorted_recursive_and_matches_onnxruntime(
    capsys, server, images, ort_session
):
    code, out, err = run_infer(capsys, images, "--url", url(server), "--top-k", "3")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["image", "rank", "label", "score"]
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 3 * len(SORTED)
    assert [r[0] for r in rows if len(r) == 4] == [str(images / rel) for rel in SORTED]
    want = reference_top(ort_session, [images / rel for rel in SORTED], 3)
    got = [(r[-2], float(r[-1])) for r in rows]
    assert [label for label, _ in got] == [label for top in want for label, _ in top]
    np.testing.assert_allclose([s for _, s in got], [s for top in want for _, s in top], atol=1e-4)


@pytest.mark.slow
def test_json_lines_carry_the_classification_extension_labels(capsys, server, images, ort_session):
    code, out, _ = run_infer(capsys, images, "--url", url(server), "--top-k", "4", "--json")
    assert code == 0
    records = json_lines(out)
    assert [r["path"] for r in records] == [str(images / rel) for rel in SORTED]
    want = reference_top(ort_session, [images / rel for rel in SORTED], 4)
    for record, top in zip(records, want, strict=True):
        assert [(e["label"], SPEC.labels[e["index"]]) for e in record["top"]] == [
            (label, label) for label, _ in top
        ]
        np.testing.assert_allclose(
            [e["score"] for e in record["top"]], [s for _, s in top], atol=1e-5
        )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_raw_and_tensor_give_the_same_answers(capsys, server, images, model_repo, protocol):
    common = [images, "--url", url(server, protocol), "--protocol", protocol, "--json"]
    code_raw, raw, _ = run_infer(capsys, *common)
    code_tensor, tensor, _ = run_infer(capsys, *common, "--send", "tensor", "--repo", model_repo)
    assert code_raw == code_tensor == 0
    raw, tensor = json_lines(raw), json_lines(tensor)
    assert [r["top"][0]["label"] for r in raw] == [t["top"][0]["label"] for t in tensor]
    for r, t in zip(raw, tensor, strict=True):
        np.testing.assert_allclose(
            [e["score"] for e in r["top"]], [e["score"] for e in t["top"]], atol=1e-5
        )


@pytest.mark.slow
def test_batching_and_concurrency_do_not_change_answers(capsys, server, images, model_repo):
    def run(*extra):
        code, out, _ = run_infer(capsys, images, "--url", url(server), "--json", *extra)
        assert code == 0
        return out

    sequential = run("--batch-size", "1", "--concurrency", "1")
    assert run("--batch-size", "3", "--concurrency", "4") == sequential
    assert run("--batch-size", "64", "--concurrency", "2") == sequential  # capped at 8
    tensor = ["--send", "tensor", "--repo", model_repo]
    assert run(*tensor, "--batch-size", "1", "--concurrency", "1") == run(
        *tensor, "--batch-size", "4", "--concurrency", "3"
    )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shared_memory_inputs_give_the_same_answers_and_are_released(
    capsys, monkeypatch, server, images, model_repo, protocol
):
    monkeypatch.setenv(SHM_KEY_ENV, SHM_KEY)
    common = [images, "--url", url(server, protocol), "--protocol", protocol, "--json"]
    common += ["--send", "tensor", "--repo", model_repo, "--batch-size", "3", "--concurrency", "2"]
    code_plain, plain, _ = run_infer(capsys, *common)
    code_shm, shared, err = run_infer(capsys, *common, "--shared-memory")
    assert code_plain == code_shm == 0 and err == ""
    assert shared == plain
    admin = httpclient.InferenceServerClient(server.http_url)
    assert admin.get_system_shared_memory_status(headers=server.shm_headers) == []
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"client_{os.getpid()}_")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "says"), [(None, "is not set"), ("wrong-key-1234", "does not match")]
)
def test_shared_memory_refused_without_its_key(
    capsys, monkeypatch, server, images, model_repo, key, says
):
    monkeypatch.setenv(ADMIN_KEY_ENV, server.admin_key)  # the model-control key opens nothing here
    if key is None:
        monkeypatch.delenv(SHM_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(SHM_KEY_ENV, key)
    code, out, err = run_infer(
        capsys,
        images,
        "--url",
        url(server),
        "--send",
        "tensor",
        "--repo",
        model_repo,
        "--shared-memory",
    )
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"error: the server refuses the shared-memory API: it needs its shared-memory key and "
        f"${SHM_KEY_ENV} {says}"
    ]
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"client_{os.getpid()}_")]


@pytest.mark.slow
def test_non_images_are_skipped_and_the_rest_classified(capsys, server, tmp_path):
    rng = np.random.default_rng(1)
    good = [write_png(tmp_path / name, random_image(rng)) for name in ("1.png", "3.png")]
    (tmp_path / "2-notes.txt").write_text("not an image")
    (tmp_path / "4-cut.png").write_bytes(good[0].read_bytes()[:60])  # truncated
    code, out, err = run_infer(capsys, tmp_path, "--url", url(server), "--json")
    assert code == 3
    assert [r["path"] for r in json_lines(out)] == [str(p) for p in good]
    notes, cut = err.splitlines()
    assert (
        notes
        == f"skipped {tmp_path / '2-notes.txt'}: not a readable image (UnidentifiedImageError)"
    )
    assert cut.startswith(f"skipped {tmp_path / '4-cut.png'}: corrupt or truncated image")


@pytest.mark.slow
def test_a_rejected_image_fails_alone(server, images):
    """The server's rejection of one image in a batch costs only that image."""
    triton = Triton(server.http_url)
    try:
        classifier = Classifier(triton, triton.model(ENSEMBLE), None, top_k=2)
        good = [images / "a.png", images / "b.png"]
        items = [
            (0, good[0], good[0].read_bytes()),
            (1, Path("bad.png"), b"not an image at all"),
            (2, good[1], good[1].read_bytes()),
        ]
        outcomes = classifier._isolating(items)
    finally:
        triton.close()
    assert [o.path for o in outcomes] == [good[0], Path("bad.png"), good[1]]
    assert outcomes[0].top and outcomes[2].top and outcomes[1].top is None
    assert outcomes[1].error.startswith("rejected by the server: ")
    assert "not a readable image" in outcomes[1].error


@pytest.mark.slow
def test_unknown_model_names_the_ready_ones(capsys, server, images):
    code, _, err = run_infer(capsys, images, "--url", url(server), "--model", "nope")
    assert code == 1
    assert err.splitlines() == [
        f"error: model 'nope' is not ready on http://{server.http_url}; "
        f"ready models: {ENSEMBLE}, {CLASSIFIER}, {ENSEMBLE}_preprocess"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", CLASSIFIER], f"model '{CLASSIFIER}' takes a tensor, not image bytes"),
        (["--model", ENSEMBLE, "--send", "tensor"], "it takes image bytes, use --send raw"),
        (["--send", "tensor", "--repo", "nowhere"], "pass --spec PATH"),
    ],
)
def test_model_and_mode_mismatches_are_one_line_errors(capsys, server, images, extra, message):
    code, _, err = run_infer(capsys, images, "--url", url(server), *extra)
    assert code == 1 and len(err.splitlines()) == 1 and message in err


@pytest.mark.slow
def test_a_spec_that_does_not_fit_the_model_is_refused(capsys, server, images, tmp_path):
    spec = ModelSpec.from_dict({**SPEC.to_dict(), "height": 32, "width": 32})
    save_spec(spec, tmp_path / "model_spec.json")
    code, _, err = run_infer(
        capsys,
        images,
        "--url",
        url(server),
        "--send",
        "tensor",
        "--spec",
        tmp_path / "model_spec.json",
    )
    assert code == 1
    assert f"does not fit model '{CLASSIFIER}'" in err and "[1, 32, 32]" in err


@pytest.mark.slow
def test_the_script_runs_from_a_subprocess(server, images):
    result = subprocess.run(
        [
            sys.executable,
            "client/infer.py",
            str(images / "a.png"),
            "--url",
            url(server),
            "--top-k",
            "1",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == [str(images / "a.png"), "1"]
