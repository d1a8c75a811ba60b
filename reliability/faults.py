"""Faults under load: a killed Python stub, tritonserver dying, one of two replicas lost, a
server restart, an interrupted `optimize`, corrupt model files. Each runs on its own server (or
replicas) and copy of the deployment, with a bounded load.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.connection import Policy, Triton, describe
from reliability.deploy import Deployment, find, running, running_replicas
from reliability.errors import ReliabilityError
from reliability.load import Load, summary
from reliability.reference import Probe
from serve import procs
from serve.errors import ServerError
from serve.repository import config_text, read_config
from serve.server import TritonServer
from serve.supervisor import DEFAULT_RESTARTS, describe_exit

CONCURRENCY = 8
WARMUP_S = 0.5
SETTLE_S = 1.5  # load after recovery: requests then must all succeed
RECOVERY_CAP_S = 20.0
BASELINE_S = 4.0  # how long the baseline watches a model without its stub
STOP_S = 1.0  # then the process group gets SIGKILL
OPTIMIZE_TIMEOUT_S = 600
# optimize in seconds, not minutes: the fault is in its last step, not in the models.
OPTIMIZE_FAST = [
    "prune.enabled=false",
    "quantize.targets=[cpu]",
    "quantize.methods=[minmax]",
    "data.calibration_images=64",
    "data.min_calibration_images=64",
    "data.selection_images=64",
    "bench.rounds=1",
    "bench.seconds=0.01",
    "bench.warmup=1",
    "threads=1",
    "tensorrt.enabled=false",
]
VICTIM = "victim"  # a spare copy of the classifier: the model that gets corrupted


@dataclass
class Result:
    fault: str
    requests: int = 0
    failed: int = 0
    retried: int = 0
    lost_as_is: int = 0  # what the client with its current retry rules would have lost
    recovery_s: float | None = None  # from the fault to the last error or the end of restore_s
    # The reload or restart itself: host speed sets it (an OpenVINO reload compiles the model),
    # so tests bound recovery_s - restore_s, the time the fault went unseen or unbridged.
    restore_s: float | None = None
    passed: bool | None = None  # None: a baseline that measures Triton, not a check
    note: str = ""


@dataclass(frozen=True)
class Recovery:
    end: float  # time.monotonic() when the model or server was back
    seconds: float  # how long the reload or restart took, from when the fault was seen


@dataclass
class Setup:
    work: Path
    deployment: Deployment  # the pristine copy; each fault copies it again
    probes: list[Probe]
    run: Path | None  # a train run for the optimize faults


@contextlib.contextmanager
def serving(
    setup: Setup, name: str, extra: Callable[[Path], None] | None = None, guarded: bool = True
):
    """A fresh copy of the deployment (changed by `extra`) served on its own ports; `guarded`:
    with serve's stub watchdog and supervisor, else Triton on its own."""
    work = setup.work / name
    repo = work / "model_repository"
    shutil.copytree(setup.deployment.repo, repo)
    if extra:
        extra(repo)
    # A model version that failed to load, or lost its stub, never finishes unloading: Triton
    # would wait its whole exit timeout (10 s) at the end. The measurement is over by then.
    restarts = DEFAULT_RESTARTS if guarded else None
    with running(repo, work, stop_timeout=STOP_S, watchdog=guarded, restarts=restarts) as triton:
        yield triton, repo


def _load(triton: TritonServer, setup: Setup, seconds: float = 120.0) -> Load:
    return Load(triton, setup.probes, CONCURRENCY, seconds)


def _call(triton: TritonServer, method: str, *args, **kwargs):
    """One HTTP call on a connection closed right after: Triton's shutdown waits its whole
    exit timeout (10 s) for a kept-alive connection."""
    with contextlib.closing(http.InferenceServerClient(triton.http_url)) as client:
        return getattr(client, method)(*args, **kwargs)


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _stubs(triton: TritonServer, model: str) -> list[procs.Stub]:
    found = [s for s in procs.stubs(triton.process.pid) if s.model == model]
    if not found:
        raise ReliabilityError(f"no Python stub for {model} under pid {triton.process.pid}")
    return found


def _stub(triton: TritonServer, model: str) -> procs.Stub:
    return _stubs(triton, model)[0]


def _result(
    name: str,
    load: Load,
    t_fault: float,
    passed_if: bool,
    note: str,
    done: Recovery | None = None,
):
    s = summary(load.records)
    ends = [t for t in (s["last_error_at"], done and done.end) if t is not None]
    return Result(
        name,
        s["requests"],
        s["failed"],
        s["retried"],
        s["lost_as_is"],
        max(ends) - t_fault if ends else 0.0,
        done.seconds if done else None,
        passed_if and s["failed"] == 0,
        note + (f"; first failure: {s['first_failure']}" if s["failed"] else ""),
    )


ABORTED = "tritonserver itself aborted"


def aborted(code: int) -> str:
    # Seen here: Triton 2.51's Python backend throws boost::interprocess::lock_exception and
    # aborts the whole server when a stub dies holding its shared-memory lock. Intermittent.
    return f"{ABORTED} ({describe_exit(code)}): the dead stub held the Python backend's IPC lock"


def stub_kill_baseline(setup: Setup) -> Result:
    """No watchdog, no supervisor: what Triton itself does when a model's stubs die (all of
    them: with one instance left, the client's retries would find it)."""
    model = setup.deployment.preprocess
    with (
        serving(setup, "stub_baseline", guarded=False) as (triton, _),
        _load(triton, setup) as load,
    ):
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        for stub in _stubs(triton, model):
            os.kill(stub.pid, signal.SIGKILL)
        time.sleep(BASELINE_S)
        code = triton.process.poll()
        ready = _call(triton, "is_model_ready", model) if code is None else None
    s = summary(load.records, since=t_fault)
    outcome = f"model still READY={ready}, every request fails" if code is None else aborted(code)
    return Result(
        f"kill {model} stubs, no watchdog",
        s["requests"],
        s["failed"],
        s["retried"],
        s["lost_as_is"],
        passed=None,
        note=f"no restart in {BASELINE_S:.0f} s; {outcome}",
    )


def _recovered(triton: TritonServer, since: int) -> str | None:
    """How the server came back after a fault: a watchdog reload, or a supervisor restart
    (`since`: restarts before the fault); None while it has not."""
    reloads = [e for e in triton.watchdog.events if e.error is None]
    restarts = [r for r in triton.supervisor.restarts[since:] if r.ready_seconds is not None]
    if restarts:
        r = restarts[-1]
        return f"{aborted(r.code)}; the supervisor restarted it in {r.ready_seconds:.2f}s"
    if reloads:
        return f"watchdog reloaded the model in {reloads[0].reload_seconds:.2f}s"
    return None


def _done_at(triton: TritonServer) -> Recovery | None:
    """The recovery that finished last."""
    done = [
        Recovery(e.detected + e.reload_seconds, e.reload_seconds)
        for e in triton.watchdog.events
        if e.error is None
    ]
    done += [
        Recovery(r.died + r.ready_seconds, r.ready_seconds)
        for r in triton.supervisor.restarts
        if r.ready_seconds
    ]
    return max(done, key=lambda r: r.end, default=None)


def stub_kill(setup: Setup, model: str) -> Result:
    """A stub killed mid-request: the watchdog reloads its model, or, when Triton 2.51 aborts
    with it, the supervisor restarts tritonserver. Either way the client's retries bridge it."""
    with serving(setup, f"kill_{model}") as (triton, _), _load(triton, setup) as load:
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        os.kill(_stub(triton, model).pid, signal.SIGKILL)
        back = _wait(lambda: _recovered(triton, 0) is not None, RECOVERY_CAP_S)
        time.sleep(SETTLE_S)
        how = _recovered(triton, 0)
        done = _done_at(triton)
    note = how or f"not back after {RECOVERY_CAP_S:.0f}s: {_failures(triton)}"
    return _result(f"kill {model} stub (watchdog)", load, t_fault, back, note, done)


def _failures(triton: TritonServer) -> str:
    said = [e.error for e in triton.watchdog.events if e.error]
    said += [r.error for r in triton.supervisor.restarts if r.error]
    return "; ".join(said) or "no reload, no restart"


def server_abort(setup: Setup) -> Result:
    """tritonserver aborts (SIGABRT, as its lock_exception does) under load: the supervisor
    starts it again on the same ports."""
    with serving(setup, "abort") as (triton, _), _load(triton, setup) as load:
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        os.kill(triton.process.pid, signal.SIGABRT)
        back = _wait(lambda: _recovered(triton, 0) is not None, RECOVERY_CAP_S)
        time.sleep(SETTLE_S)
        done = _done_at(triton)
        restarts = triton.supervisor.restarts
    note = (
        f"supervisor restarted tritonserver in {restarts[-1].ready_seconds:.2f}s "
        f"({len(restarts)} restart); client retries bridge the gap"
        if back
        else f"not back after {RECOVERY_CAP_S:.0f}s: {_failures(triton)}"
    )
    return _result("abort tritonserver (supervisor)", load, t_fault, back, note, done)


def _answered(triton: TritonServer) -> int:
    """Requests the server's models have answered since it started (its statistics)."""
    stats = _call(triton, "get_inference_statistics")["model_stats"]
    return sum(int(m["inference_count"]) for m in stats)


def replica_kill(setup: Setup) -> Result:
    """One of two replicas killed under load (SIGKILL): the client goes on with the other, the
    replica's supervisor starts it again, and the client takes it back once it is ready."""
    work = setup.work / "replicas"
    repo = shutil.copytree(setup.deployment.repo, work / "model_repository")
    with (
        running_replicas(repo, work, 2, stop_timeout=STOP_S) as group,
        _load(group, setup) as load,
    ):
        victim = group.servers[1]
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        os.kill(victim.process.pid, signal.SIGKILL)
        restarted = _wait(lambda: _recovered(victim, 0) is not None, RECOVERY_CAP_S)
        # A new process counts from 0: anything it answers, the client sent after taking it back.
        taken_back = restarted and _wait(lambda: _answered(victim) > 0, RECOVERY_CAP_S)
        time.sleep(SETTLE_S)
        done = _done_at(victim)
        restart = victim.supervisor.restarts[-1] if victim.supervisor.restarts else None
    if taken_back:
        note = (
            f"replica 1 back {restart.ready_seconds:.2f}s after it died (its supervisor), "
            "served again once the client saw it ready; replica 0 carried the load meanwhile"
        )
    elif restarted:
        note = "replica 1 restarted, but the client never sent to it again"
    else:
        note = f"replica 1 not back after {RECOVERY_CAP_S:.0f}s: {_failures(victim)}"
    return _result(
        "kill 1 of 2 replicas (client fails over)", load, t_fault, taken_back, note, done
    )


def server_restart(setup: Setup) -> Result:
    with serving(setup, "restart") as (triton, _), _load(triton, setup) as load:
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        triton.stop()
        stopped = time.monotonic()
        triton.start()
        back = time.monotonic()
        done = Recovery(back, back - stopped)
        time.sleep(SETTLE_S)
    note = (
        f"drain {stopped - t_fault:.1f}s (Triton serves open connections until its exit "
        f"timeout), down {done.seconds:.1f}s; client retries bridge the gap"
    )
    return _result("restart server (SIGTERM, start)", load, t_fault, True, note, done)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _litter(*folders: Path) -> list[str]:
    return sorted(p.name for f in folders for p in f.glob(".*.tmp"))


def _optimize(run: Path, repo: Path, fault: str) -> subprocess.Popen:
    """`python -m optimize` with `fault` ("exception" or "pause") injected mid-write."""
    config = Path(__file__).resolve().parents[1] / "configs" / "optimize.yaml"
    args = ["--run", str(run), f"repository.path={repo}", *OPTIMIZE_FAST]
    if config.is_file():
        args += ["--config", str(config)]
    return subprocess.Popen(
        [sys.executable, "-m", "reliability.inject", fault, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sigterm_when_staging(proc: subprocess.Popen, repo: Path) -> bool:
    """SIGTERM once optimize has started its staged repository; False if it never did."""
    pattern = f".{repo.name}.*.tmp"
    deadline = time.monotonic() + OPTIMIZE_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if any(repo.parent.glob(pattern)):
            proc.send_signal(signal.SIGTERM)
            return True
        time.sleep(0.02)  # the write is paused: no hurry, and the load keeps the cores
    return False


def optimize_fault(setup: Setup, how: str) -> Result:
    """`how`: "sigterm" while the new repository is staged, or "exception" midway through."""
    if setup.run is None:
        return Result(f"optimize: {how}", passed=None, note="skipped: no train run (--run)")
    name = f"optimize_{how}"
    run = shutil.copytree(setup.run, setup.work / name / "run", ignore=_only_run_files)
    with serving(setup, name) as (triton, repo), _load(triton, setup) as load:
        before = _digest(repo)
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        proc = _optimize(run, repo, "pause" if how == "sigterm" else how)
        try:
            hit = _sigterm_when_staging(proc, repo) if how == "sigterm" else True
            _, err = proc.communicate(timeout=OPTIMIZE_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        time.sleep(SETTLE_S)
    intact = _digest(repo) == before
    replaced = not intact and _complete(repo)
    litter = _litter(repo.parent, run)
    last = (err.strip().splitlines() or [""])[-1]
    note = (
        f"exit {proc.returncode}; repository "
        + ("intact" if intact else "replaced by a complete new one" if replaced else "DAMAGED")
        + (f"; left behind: {', '.join(litter)}" if litter else "")
        + (f"; {last}" if how == "exception" else "")
        + ("" if hit else "; optimize ended before staging the repository")
    )
    ok = hit and proc.returncode != 0 and intact
    return _result(f"optimize: {how} mid-write", load, t_fault, ok, note)


def _only_run_files(folder: str, names: list[str]) -> list[str]:
    # Only what optimize reads: a copy of a large run's outputs would be wasted time.
    return [n for n in names if n not in ("checkpoint.pt", "model_spec.json")]


def _complete(repo: Path) -> bool:
    try:
        find(repo)
    except ReliabilityError:
        return False
    return all((d / "1").is_dir() for d in repo.iterdir() if (d / "config.pbtxt").is_file())


def _add_victim(source: str) -> Callable[[Path], None]:
    def add(repo: Path) -> None:
        shutil.copytree(repo / source, repo / VICTIM)
        config = read_config(repo / VICTIM / "config.pbtxt")
        config.name = VICTIM
        (repo / VICTIM / "config.pbtxt").write_text(config_text(config))

    return add


def _corrupt(repo: Path, what: str) -> None:
    if what == "model.onnx":
        (repo / VICTIM / "1" / "model.onnx").write_bytes(b"not an ONNX model " * 64)
    else:
        (repo / VICTIM / "config.pbtxt").write_text(f'name: "{VICTIM}" backend: {{{{ broken')


def _victim_answers(triton: TritonServer, setup: Setup) -> bool:
    probe = next(p for p in setup.probes if p.model == setup.deployment.classifier)
    client = Triton(triton.http_url, "http", Policy(retries=0))
    try:
        replace(probe, model=VICTIM).send(client)
    except Exception:  # any failure means: it does not answer correctly
        return False
    finally:
        client.close()
    return True


def corrupt_reload(setup: Setup, what: str) -> Result:
    """A loaded model's file is corrupted, then the operator reloads it."""
    name = f"corrupt {what}, reload"
    extra = _add_victim(setup.deployment.classifier)
    with serving(setup, f"reload_{what}", extra) as (triton, repo), _load(triton, setup) as load:
        time.sleep(WARMUP_S)
        t_fault = time.monotonic()
        _corrupt(repo, what)
        try:
            _call(triton, "load_model", VICTIM, headers=triton.admin_headers)
            refused = None
        except InferenceServerException as e:
            refused = describe(e)
        answers = _victim_answers(triton, setup)
        time.sleep(SETTLE_S)
    note = f"reload refused ({refused})" if refused else "reload ACCEPTED a corrupt model"
    note += f"; {VICTIM} " + ("still serves the loaded version" if answers else "DOWN")
    return _result(name, load, t_fault, bool(refused) and answers, note)


def corrupt_start(setup: Setup, what: str) -> Result:
    """The server starts on a repository where one model is corrupt."""
    name = f"corrupt {what}, server start"

    def damaged(repo: Path) -> None:
        _add_victim(setup.deployment.classifier)(repo)
        _corrupt(repo, what)

    try:
        with (
            serving(setup, f"start_{what}", damaged) as (triton, _),
            _load(triton, setup) as load,
        ):
            t_fault = time.monotonic()
            victim_ready = _call(triton, "is_model_ready", VICTIM)
            reason = triton.unavailable.get(VICTIM, "not reported")
            time.sleep(SETTLE_S)
    except ServerError as e:
        cause = str(e).splitlines()[0]
        return Result(name, passed=False, note=f"server refused to start, no model serves: {cause}")
    note = f"{VICTIM} ready={victim_ready}, unavailable: {reason.splitlines()[0][:120]}; "
    note += "the other models serve"
    return _result(name, load, t_fault, not victim_ready, note)


FAULTS: dict[str, Callable[[Setup], Result]] = {
    "stub-baseline": stub_kill_baseline,
    "stub-preprocess": lambda setup: stub_kill(setup, setup.deployment.preprocess),
    "stub-classifier": lambda setup: stub_kill(setup, setup.deployment.classifier),
    "server-abort": server_abort,
    "replica-kill": replica_kill,
    "restart": server_restart,
    "optimize-sigterm": lambda setup: optimize_fault(setup, "sigterm"),
    "optimize-exception": lambda setup: optimize_fault(setup, "exception"),
    "corrupt-onnx-reload": lambda setup: corrupt_reload(setup, "model.onnx"),
    "corrupt-config-reload": lambda setup: corrupt_reload(setup, "config.pbtxt"),
    "corrupt-onnx-start": lambda setup: corrupt_start(setup, "model.onnx"),
    "corrupt-config-start": lambda setup: corrupt_start(setup, "config.pbtxt"),
}


def run(setup: Setup, only: list[str] | None = None) -> list[Result]:
    results = []
    for key, fault in FAULTS.items():
        if only and key not in only:
            continue
        try:
            results.append(fault(setup))
        except Exception as e:  # a fault that breaks the harness is a failed fault, not a crash
            results.append(Result(key, passed=False, note=f"error: {type(e).__name__}: {e}"))
        print(f"  {key}: {_verdict(results[-1])}", flush=True)
    return results


def _verdict(result: Result) -> str:
    if result.passed is None:
        return "baseline" if result.requests else "skipped"
    return "ok" if result.passed else "FAILED"


COLUMNS = [
    ("fault", "fault"),
    ("requests", "requests"),
    ("failed", "failed"),
    ("retried", "retried"),
    ("lost_as_is", "lost by client as-is"),
    ("recovery_s", "recovery s"),
    ("restore_s", "of which reload/restart s"),
    ("verdict", "result"),
    ("note", "note"),
]


def rows(results: list[Result]) -> list[dict]:
    return [{**vars(r), "verdict": _verdict(r)} for r in results]


def summary_line(results: list[Result]) -> str:
    checked = [r for r in results if r.passed is not None]
    passed = sum(1 for r in checked if r.passed)
    lost = sum(r.failed for r in checked)
    as_is = sum(r.lost_as_is for r in checked)
    return (
        f"faults: {len(checked)} checked, {passed} survived, {len(checked) - passed} failed, "
        f"{lost} requests lost ({as_is} with the client's current retry rules)"
    )
