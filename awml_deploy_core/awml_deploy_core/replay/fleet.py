"""Fleet replay evaluation: a set of bags (a folder, a glob or a list file), each bag one task, one exact result.

Each bag runs the single-bag replay's own steps (:func:`.offline.open_replay` + :func:`.offline._replay_loop`:
same loader, pipeline and scoring), in this process or as a task on a Ray worker (``--workers N`` starts a local
cluster bound to 127.0.0.1; ``--address`` joins an existing one). A task returns its per-frame lines and the
*evidence* of its scored frames (:class:`.scoring.ScoredEvidence`: the detections and the ground truth each was
scored against, as arrays), never per-bag metrics. The driver aggregates all bags' evidence once, in bag order,
with the single-bag aggregation (:func:`.scoring.scores_from_evidence`), so the set's AP is the AP of all frames
together, bit for bit - not a mean of per-bag APs.

Outputs in the run folder (default ``<work_dir>/replay/fleet_<set>_<backend>``):

* ``bags/<bag>-<key>.json`` - one per finished bag, written atomically as it finishes; ``key`` hashes the bag's
  files, the model (config, checkpoint, bundle manifest) and the replay settings. A re-run skips a bag whose file
  is there (logged) unless ``force``;
* ``summary.json`` (the single-bag schema for the whole set, plus ``fleet``: the per-bag table and the failures),
  ``frames.jsonl`` (every frame, with ``bag`` and ``bag_index``), ``report.md`` - so ``replay-compare`` and the
  criteria work on a set exactly as on one bag. Also written, marked partial, when the run is interrupted.

A bag that fails for its own reasons (unreadable, no ground truth) is listed with its one-line reason and the rest
go on; the set then fails (exit 1, gate ``bags evaluated``). A worker process that dies is retried by Ray
(``max_retries``). SIGINT: the running bags are cancelled, the finished ones kept, exit 130.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import MANIFEST, atomic_write_json, atomic_write_text, ensure_writable_dir, sha256_file, sha256_json
from ..config import DeployConfig
from ..data.rosbag_io import DEFAULT_LIDAR_TOPIC
from ..errors import AwmlDeployError, BackendUnavailableError, DatasetError, UsageError
from .criteria import ReplayCriteria, check_criteria
from .offline import _StopFlag, sigint_stops
from .lidar3d import TASK as LIDAR3D
from .scoring import DEFAULT_TOLERANCE_MS, SCORED, ScoredEvidence, scores_from_evidence
from .task import ReplayTask, task_of
from .summary import EXIT_INTERRUPTED, ReplaySummary

log = logging.getLogger(__name__)

FLEET_EXTRA = "pip install 'awml_deploy_core[fleet]'"
BAG_RESULT_SCHEMA = 1
MAX_RETRIES = 3  # Ray re-runs a task whose worker process died this many times
BAG_SUFFIXES = (".mcap", ".db3")
TIMING_KEYS = ("latency_ms", "io_ms")  # the only frame-line fields that differ between two runs of the same set


# --------------------------------------------------------------------------------------------- the set of bags
def is_bag(path: Path) -> bool:
    """A rosbag2 folder (with metadata.yaml) or a single storage file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def resolve_bags(spec: str | Path) -> list[Path]:
    """The bags of ``spec``: one bag; a folder of bags (its direct children that are bags, sorted); a glob
    (``'drives/*'``, sorted); or a list file (one path a line, ``#`` comments, relative to the file's folder).
    A listed path that is missing stays in the set and fails as that bag's own error."""
    text = str(spec)
    path = Path(text)
    if any(ch in text for ch in "*?["):
        bags = [Path(p) for p in sorted(glob.glob(text)) if is_bag(Path(p)) or Path(p).is_dir()]
        if not bags:
            raise DatasetError(f"{text}: the glob matches no bag")
        return bags
    if is_bag(path):
        return [path]
    if path.is_dir():
        bags = sorted(p for p in path.iterdir() if is_bag(p))
        if not bags:
            raise DatasetError(f"{path}: neither a bag (no metadata.yaml) nor a folder of bags")
        return bags
    if path.is_file():
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        bags = [p if p.is_absolute() else path.parent / p for p in (Path(ln) for ln in lines if ln)]
        if not bags:
            raise DatasetError(f"{path}: the list file names no bag")
        return bags
    raise DatasetError(f"{path}: no such bag, folder, glob or list file")


def bag_sha256(path: Path) -> str:
    """The bag's fingerprint: sha256 over metadata.yaml's bytes (message counts, time span, storage files) and
    every file's name, size and modification time. Reading every byte would cost a full pass over a set of
    recorded drives (about 1 GB per one-minute bag) before any work; a bag re-recorded or rewritten in place
    changes its fingerprint. A path that is not there fingerprints by its name alone."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if f.name == "metadata.yaml":
            h.update(f.read_bytes())
    if not files:
        h.update(f"missing:{path}".encode())
    return h.hexdigest()


def model_sha256(cfg: DeployConfig, backend: str) -> str:
    """What decides the detections: the backend, the resolved config, the checkpoint's and the bundle manifest's
    bytes (when there are files)."""
    parts: dict[str, Any] = {"backend": backend, "config": cfg.model_dump(mode="json")}
    parts["config"].pop("work_dir", None)
    for name, p in (("checkpoint", Path(str(cfg.checkpoint)) if cfg.checkpoint else None),
                    ("manifest", Path(cfg.work_dir) / MANIFEST)):
        if p is not None and p.is_file():
            parts[name] = sha256_file(p)
    return sha256_json(parts)


@dataclass(frozen=True)
class FleetSettings:
    """The replay settings every bag of a set runs with (part of each bag result's key)."""

    backend: str = "onnxruntime"
    lidar_topic: str = DEFAULT_LIDAR_TOPIC
    gt_topic: str | None = None
    gt_info: str | None = None
    tolerance_ms: float = DEFAULT_TOLERANCE_MS
    strict_order: bool = False
    max_frames: int | None = None
    # CPU threads of one bag task (ONNX Runtime intra-op and torch), in this process and on every worker alike:
    # the same count everywhere keeps the detections bit-identical (reductions split by thread differ in the
    # last bits), and a worker holds that many CPUs in Ray.
    threads: int = 1


# --------------------------------------------------------------------------------------------- one bag (the task)
_PIPELINES: dict[str, Any] = {}  # per worker process: the loaded pipeline, reused for every bag it runs


def evidence_to_json(e: ScoredEvidence, task: ReplayTask | None = None) -> dict[str, Any]:
    """A bag's evidence as JSON through its task's converters (float32 -> JSON -> float32 is exact)."""
    t = task or LIDAR3D
    return {"detections": [t.dets_to_json(b) for b in e.detections],
            "ground_truth": [t.gt_to_json(b) for b in e.ground_truth], "latency": e.latency, "no_points": e.no_points}


def evidence_from_json(d: dict[str, Any], task: ReplayTask | None = None) -> ScoredEvidence:
    t = task or LIDAR3D
    return ScoredEvidence([t.dets_from_json(b) for b in d["detections"]],
                          [t.gt_from_json(b) for b in d["ground_truth"]], list(d["latency"]), int(d["no_points"]))


def _worker_config(cfg: DeployConfig, threads: int) -> DeployConfig:
    """One worker's share of the machine: ONNX Runtime intra-op threads (and torch's) = the CPUs it holds."""
    if threads > 0 and not str(cfg.device).startswith("cuda"):
        import torch

        torch.set_num_threads(threads)
        cfg = cfg.model_copy(update={"onnxruntime": cfg.onnxruntime.model_copy(update={"intra_op_threads": threads})})
    return cfg


def _pipeline(cfg: DeployConfig, backend: str) -> tuple[Any, bool]:
    """This process's pipeline for (cfg, backend), and whether it was loaded just now (then it needs warm-up)."""
    from ..loader import load_pipeline

    key = sha256_json({"cfg": cfg.model_dump(mode="json"), "backend": backend})
    fresh = key not in _PIPELINES
    if fresh:
        _PIPELINES[key] = load_pipeline(cfg, backend)
    return _PIPELINES[key], fresh


def release_pipelines() -> None:
    """Close the pipelines this process keeps for its bags."""
    while _PIPELINES:
        _PIPELINES.popitem()[1].close()


def evaluate_bag(bag: str, cfg: DeployConfig, settings: FleetSettings, *,
                 stop: Any = None, die_once_marker: str | None = None) -> dict[str, Any]:
    """Replay one bag and return its result (JSON-safe): frame lines + scored evidence, or the one-line reason it
    failed (``status: "failed"``). ``stop``: a flag object (``.requested``) checked after each frame; a stopped
    bag is ``status: "interrupted"``. ``die_once_marker`` (tests): the first task to find this file removes it and
    kills its own process after two frames, as a crashing worker would."""
    from .offline import _FrameLog, _replay_loop, _StopFlag, open_replay

    t0 = time.perf_counter()
    cfg = _worker_config(cfg, settings.threads)
    stop = stop if stop is not None else _StopFlag()
    result: dict[str, Any] = {"schema": BAG_RESULT_SCHEMA, "bag": str(bag), "pid": os.getpid()}

    def maybe_die(_: np.ndarray) -> None:
        nonlocal frames_done
        frames_done += 1
        if die_once_marker and frames_done == 2:
            try:
                os.remove(die_once_marker)
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    frames_done = 0
    try:
        with open_replay(bag, cfg, settings.lidar_topic, settings.gt_topic, settings.gt_info, settings.tolerance_ms,
                         settings.strict_order) as (reader, scorer):
            loaded, fresh = _pipeline(cfg, settings.backend)
            warmup = cfg.evaluate.warmup if fresh else 0  # a worker's later bags reuse the warm pipeline
            _replay_loop(reader, settings.lidar_topic, loaded.pipeline, scorer, _FrameLog(None), warmup, stop, False,
                         settings.max_frames, maybe_die)
            provenance = loaded.provenance()
    except AwmlDeployError as e:
        return {**result, "status": "failed", "error": str(e), "wall_s": time.perf_counter() - t0}
    scored = sum(1 for f in scorer.frames if f["status"] == SCORED)
    if stop.requested:
        status, error = "interrupted", None
    elif scored == 0:
        status, error = "failed", f"bag {bag}: no {scorer.task.input_unit} has ground truth within {settings.tolerance_ms:g} ms"
    else:
        status, error = "ok", None
    return {**result, "status": status, "error": error, "gt_source": scorer.gt.source, "checkpoint": provenance,
            "frames": scorer.frames, "out_of_order": scorer.out_of_order,
            "evidence": evidence_to_json(scorer.evidence(), scorer.task), "wall_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------- executors
def import_ray(local: bool = True) -> Any:
    """Ray, imported on first use; missing: one line naming the extra. ``local``: this process will start a
    one-machine cluster, whose node address is then the loopback one (Ray reads this at import; without it Ray
    works out a routable address of this machine, which only a multi-machine cluster needs)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves this machine
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(f"--workers / --address need Ray, which is not installed: {FLEET_EXTRA}") \
            from None
    return ray


@contextmanager
def ray_cluster(workers: int | None, address: str | None, device: str, threads: int = 1) -> Iterator[Any]:
    """A Ray connection: ``address`` joins that cluster; else a local one with ``workers`` CPUs (and GPUs when
    ``device`` is CUDA), every server on 127.0.0.1, no dashboard. One already initialised here is reused (and
    left running)."""
    ray = import_ray(local=address is None)
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        gpus = workers if str(device).startswith("cuda") else 0
        ray.init(num_cpus=workers * max(threads, 1), num_gpus=gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()




def _run_in_process(todo: list[tuple[int, Path]], cfg: DeployConfig, settings: FleetSettings, stop: _StopFlag,
                    done: Callable[[int, dict[str, Any]], None]) -> None:
    import torch

    torch_threads = torch.get_num_threads()  # evaluate_bag sets the task's count; give the caller back its own
    try:
        for i, bag in todo:
            if stop.requested:
                break
            try:
                r = evaluate_bag(str(bag), cfg, settings, stop=stop)
            except Exception as e:  # noqa: BLE001 - a pipeline crash fails this bag, reported with its reason
                log.debug("bag %s crashed", bag, exc_info=True)
                r = {"schema": BAG_RESULT_SCHEMA, "bag": str(bag), "status": "failed",
                     "error": f"unexpected {type(e).__name__}: {e}"}
            done(i, r)
    finally:
        release_pipelines()
        torch.set_num_threads(torch_threads)


def _run_on_ray(ray: Any, todo: list[tuple[int, Path]], cfg: DeployConfig, settings: FleetSettings, stop: _StopFlag,
                done: Callable[[int, dict[str, Any]], None], in_flight: int, die_once_marker: str | None) -> None:
    """At most ``in_flight`` bags at a time (so an interrupt has little to cancel); results as they finish."""
    cuda = str(cfg.device).startswith("cuda")
    task = ray.remote(evaluate_bag).options(num_cpus=0 if cuda else settings.threads, num_gpus=1 if cuda else 0,
                                            max_retries=MAX_RETRIES)
    cfg_ref = ray.put(cfg)
    pending: dict[Any, tuple[int, Path]] = {}
    queue = list(todo)
    try:
        while (queue or pending) and not stop.requested:
            while queue and len(pending) < in_flight:
                i, bag = queue.pop(0)
                pending[task.remote(str(bag), cfg_ref, settings, die_once_marker=die_once_marker)] = (i, bag)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                i, bag = pending.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayError as e:  # a task that raised, or died more than MAX_RETRIES times
                    first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    r = {"schema": BAG_RESULT_SCHEMA, "bag": str(bag), "status": "failed",
                         "error": f"bag {bag}: {type(e).__name__}: {first}"}
                done(i, r)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


# --------------------------------------------------------------------------------------------- the set
@dataclass
class FleetOutcome:
    exit_code: int
    out_dir: Path
    summary: dict[str, Any]
    results: list[dict[str, Any] | None] = field(default_factory=list)  # per bag; "evidence" as ScoredEvidence


def default_fleet_dir(cfg: DeployConfig, spec: str | Path, backend: str) -> Path:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(spec)).name) or "set"
    return Path(cfg.work_dir) / "replay" / f"fleet_{name}_{backend}"


def result_path(out: Path, bag: Path, key: str) -> Path:
    return out / "bags" / f"{bag.name}-{key[:16]}.json"


def fleet_evaluate(spec: str | Path | Sequence[str | Path], cfg: DeployConfig, settings: FleetSettings, *,
                   workers: int | None = None, address: str | None = None, out_dir: str | Path | None = None,
                   criteria: ReplayCriteria | None = None, criteria_source: str = "criteria", force: bool = False,
                   progress: bool = True, die_once_marker: str | None = None) -> FleetOutcome:
    """Evaluate a set of bags (see the module doc); in this process unless ``workers`` or ``address``."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if settings.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {settings.threads}")
    if criteria is not None:
        check_criteria(criteria, cfg, criteria_source)
    if isinstance(spec, (str, Path)):
        bags, label = resolve_bags(spec), str(spec)
    else:
        bags, label = [Path(b) for b in spec], f"{len(spec)} bags"
    use_ray = workers is not None or address is not None
    if use_ray:
        import_ray(local=address is None)  # the missing-extra error before any work
    out = ensure_writable_dir(Path(out_dir) if out_dir is not None else default_fleet_dir(cfg, label, settings.backend))
    for stale in ("summary.json", "report.md", "frames.jsonl"):
        (out / stale).unlink(missing_ok=True)
    model_key = model_sha256(cfg, settings.backend)
    settings_key = sha256_json(asdict(settings))
    keys = [sha256_json({"bag": bag_sha256(b), "model": model_key, "settings": settings_key}) for b in bags]
    results: list[dict[str, Any] | None] = [None] * len(bags)
    todo: list[tuple[int, Path]] = []
    for i, (bag, key) in enumerate(zip(bags, keys)):
        path = result_path(out, bag, key)
        if path.is_file() and not force:
            r = json.loads(path.read_text(encoding="utf-8"))
            if r.get("status") == "ok" and r.get("key") == key:
                r["resumed"] = True
                r["evidence"] = evidence_from_json(r["evidence"], task_of(cfg))
                results[i] = r
                log.info("skipping finished bag %s (result %s; --force to evaluate it again)", bag, path)
                continue
        todo.append((i, bag))
    if len(todo) < len(bags):
        log.info("%d of %d bags already finished; evaluating %d", len(bags) - len(todo), len(bags), len(todo))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(bags), initial=len(bags) - len(todo), desc="fleet replay", unit="bag")
    t0 = time.perf_counter()
    frames_new = 0
    failures = 0

    def done(i: int, r: dict[str, Any]) -> None:
        nonlocal frames_new, failures
        r["key"] = keys[i]
        results[i] = r
        if r["status"] == "ok":
            atomic_write_json(result_path(out, bags[i], keys[i]), r)
            # arrays: a few KB a frame instead of Python lists
            r["evidence"] = evidence_from_json(r["evidence"], task_of(cfg))
            frames_new += len(r["frames"])
        elif r["status"] == "failed":
            failures += 1
            log.error("bag %s failed: %s", bags[i], r["error"])
        if bar is not None:
            fps = frames_new / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{fps:.1f} frames/s, {failures} failed")
            bar.update()
        else:
            log.info("bag %d/%d %s: %s", sum(x is not None for x in results), len(bags), bags[i].name, r["status"])

    interrupted = False
    try:
        with sigint_stops("stopping the running bags, then writing the partial report") as stop:
            if use_ray:
                with ray_cluster(workers, address, cfg.device, settings.threads) as ray:
                    if workers is not None:
                        in_flight = workers
                    else:
                        res = ray.cluster_resources()
                        cuda = str(cfg.device).startswith("cuda")
                        in_flight = max(1, int(res.get("GPU", 1) if cuda else res.get("CPU", 1) // settings.threads))
                    _run_on_ray(ray, todo, cfg, settings, stop, done, in_flight, die_once_marker)
            else:
                _run_in_process(todo, cfg, settings, stop, done)
            interrupted = stop.requested
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    return _finish_set(out, label, bags, results, cfg, settings, criteria, interrupted, wall, frames_new,
                       workers, address)


def _finish_set(out: Path, label: str, bags: list[Path], results: list[dict[str, Any] | None], cfg: DeployConfig,
                settings: FleetSettings, criteria: ReplayCriteria | None, interrupted: bool, wall: float,
                frames_new: int, workers: int | None, address: str | None) -> FleetOutcome:
    """The set's summary from every finished bag's evidence, aggregated once in bag order; files; exit code."""
    from .offline import _finish

    task = task_of(cfg)
    metric_cfg = task.metric_config(cfg, cfg.model.class_names)
    frames: list[dict[str, Any]] = []
    parts: list[ScoredEvidence] = []
    out_of_order: list[int] = []
    rows: list[dict[str, Any]] = []
    checkpoint = None
    for bag, r in zip(bags, results):
        row: dict[str, Any] = {"bag": str(bag), "status": "not run" if r is None else r["status"],
                               "error": None if r is None else r.get("error")}
        if r is not None and r["status"] == "ok":
            ev = r["evidence"]
            parts.append(ev)
            base = len(frames)
            out_of_order += [base + k for k in r["out_of_order"]]
            for line in r["frames"]:
                frames.append({**line, "index": len(frames), "bag": bag.name, "bag_index": line["index"]})
            own = scores_from_evidence(cfg.model.class_names, settings.tolerance_ms, r["gt_source"], r["frames"], ev,
                                       r["out_of_order"], metric_cfg, task).to_dict()
            checkpoint = checkpoint or r.get("checkpoint")
            row.update(key=r["key"], frames=own["counts"]["frames"], scored=own["counts"][SCORED],
                       map_at_2m=task.headline(own).value, wall_s=r.get("wall_s"), pid=r.get("pid"),
                       resumed=bool(r.get("resumed")))
        rows.append(row)
    gt_sources = sorted({r["gt_source"] for r in results if r is not None and r["status"] == "ok"})
    scores = scores_from_evidence(cfg.model.class_names, settings.tolerance_ms,
                                  gt_sources[0] if len(gt_sources) == 1 else f"{len(gt_sources)} bags' ground truth",
                                  frames, ScoredEvidence.concatenate(parts), out_of_order, metric_cfg, task)
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r for r in rows if r["status"] == "ok"]
    result = ReplaySummary(
        mode="offline", bag=label, lidar_topic=settings.lidar_topic, backend=settings.backend, model=cfg.model.name,
        checkpoint=checkpoint, device=cfg.device, scores=scores, stopped="interrupted" if interrupted else None,
        max_frames=settings.max_frames, wall_s=wall, throughput_fps=frames_new / wall if wall > 0 else None,
        criteria=criteria)
    result.judge([{"name": "bags evaluated", "passed": not failed,
                   "detail": f"{len(ok)}/{len(rows)} bags evaluated" + (
                       f"; failed: {', '.join(Path(r['bag']).name for r in failed)}" if failed else "")}])
    summary = result.to_dict()
    summary["fleet"] = {"bags": rows, "failures": [{"bag": r["bag"], "error": r["error"]} for r in failed],
                        "workers": workers, "address": address, "settings": asdict(settings),
                        "resumed": sum(1 for r in rows if r.get("resumed")), "frames_evaluated_now": frames_new,
                        "aggregation": "metrics over all frames of all bags at once (not a mean of per-bag values)",
                        # what each bag's row holds under the key map_at_2m: the task's headline (AP50 for 2D)
                        "headline": task.headline({}).label}
    if interrupted and not summary.get("error"):
        summary["error"] = (f"interrupted: {len(ok)} of {len(rows)} bags finished; re-run the same command to "
                            "evaluate the rest")
    atomic_write_text(out / "frames.jsonl", "".join(json.dumps(f, allow_nan=False) + "\n" for f in frames))
    _finish(out, summary, frames)
    _append_bag_table(out / "report.md", summary["fleet"])
    if interrupted:
        log.warning("interrupted: %d of %d bags finished; partial report in %s", len(ok), len(rows), out)
        return FleetOutcome(EXIT_INTERRUPTED, out, summary, results)
    return FleetOutcome(0 if summary["passed"] else 1, out, summary, results)


def _append_bag_table(report: Path, fleet: dict[str, Any]) -> None:
    from ..report import markdown_table

    if not report.is_file():
        return
    rows = [[Path(r["bag"]).name, r["status"] + (" (resumed)" if r.get("resumed") else ""), r.get("frames", ""),
             r.get("scored", ""), "-" if r.get("map_at_2m") is None else f"{r['map_at_2m']:.4f}",
             "-" if r.get("wall_s") is None else f"{r['wall_s']:.1f}", r.get("error") or ""] for r in fleet["bags"]]
    headline = fleet.get("headline", "mAP@2m")
    text = report.read_text(encoding="utf-8") + "\n".join([
        "", f"## Bags ({len(rows)})", "",
        f"The set's metrics above are computed over all frames of all bags at once; the per-bag {headline} here is "
        f"for reading only (its mean is not the set's {headline}).", "",
        markdown_table(["bag", "status", "frames", "scored", f"{headline} (this bag)", "wall [s]", "reason"], rows),
        ""])
    atomic_write_text(report, text)


__all__ = ["FLEET_EXTRA", "FleetOutcome", "FleetSettings", "TIMING_KEYS", "bag_sha256", "default_fleet_dir",
           "evaluate_bag", "evidence_from_json", "evidence_to_json", "fleet_evaluate", "import_ray", "is_bag",
           "model_sha256", "ray_cluster", "release_pipelines", "resolve_bags"]
