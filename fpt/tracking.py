"""Optional experiment tracking: mirror each evaluation of a run to TensorBoard, MLflow or
Weights & Biases (offline). Off by default; metrics.parquet stays the record, the tracker a
view of it.

The setting is the config's `tracking:` block (`backend: none | tensorboard | mlflow |
wandb`, optional `dir`, optional `project`). Like `allow_unverified_pickles` it is a fact
about the machine, not about the run: it never enters a RunSpec, a run path or a settings
hash. It travels as the environment variable FPT_TRACKING, a small JSON object (or just a
backend name), read here only (`open_tracker`): the Snakefile exports it for its jobs
(`export`, as fpt.data.trust exports FPT_ALLOW_UNVERIFIED_PICKLES; never a rule param: a
new param reruns every finished job), and `fpt train` by hand reads the same variable, e.g.
`FPT_TRACKING=tensorboard fpt train ... --out results/runs/<run path>`.

`dir` defaults to RESULTS/tracking/<backend> (the Snakefile fills in the config's
results_dir; by hand: the results folder above `--out` when it is RESULTS/runs/<run path>,
else OUT/tracking/<backend>). `project` (the MLflow experiment, the W&B project) defaults to
the config's `label` (by hand: "fpt").

Each run is one tracker run named by its path, with its axes, lr, seed, settings hash and
other settings as parameters/tags. Each evaluation logs `<split>/loss`, `<split>/accuracy`
and `wall_s` at the evaluation's step:

- tensorboard: event files in DIR/<run path>/ (torch.utils.tensorboard; needs the
  `tensorboard` package). View: `tensorboard --logdir DIR`.
- mlflow: the file store DIR (tracking URI `file:DIR`, mlflow-skinny is enough), one
  experiment per project, one MLflow run per fpt run (tag `fpt.run` = the run path). MLflow
  3 keeps the file store in maintenance mode behind MLFLOW_ALLOW_FILE_STORE=true, which the
  tracker sets for its own process; `mlflow ui --backend-store-uri file:DIR` needs it too.
- wandb: offline runs in DIR/wandb/ (mode offline: no network, no login, no system
  statistics, no git or code capture, no error reporting), run id derived from the run path.
  Upload later with `wandb sync DIR/wandb/offline-run-*` where there is network.

A job restarted from its checkpoint continues the same tracker run: the same TensorBoard
folder, the MLflow run found by its `fpt.run` tag, the W&B run id (resume="allow"). Steps
the killed attempt had logged after its last checkpoint are trained again; they are not
logged twice: TensorBoard purges the earlier attempt's events from the first step logged
again on (so it shows the values metrics.parquet holds), MLflow and W&B skip the steps the
run already holds (keeping the first attempt's values: the same loss and accuracy on CPU,
where resumed training is deterministic, but the first attempt's wall_s). A run trained
again from step 0 (its checkpoint deleted, or a forced rerun) starts afresh: TensorBoard
purges the folder's earlier events, MLflow starts a second run of the same name, W&B a run
with a new id (the path's id with a suffix -2, -3, ...).

Errors: a bad FPT_TRACKING, or a chosen backend whose package is not installed, raise
TrackingError (a ValueError: `fpt train` exits 2 with its message) when the tracker opens,
before training starts. A failure while logging (a full disk, a broken store) is a warning:
tracking stops for the rest of the run, training goes on.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fpt.spec import RunSpec

log = logging.getLogger("fpt.tracking")

ENV = "FPT_TRACKING"
CONFIG_KEY = "tracking"
BACKENDS = ("none", "tensorboard", "mlflow", "wandb")
KEYS = ("backend", "dir", "project")
INSTALL = 'pip install -e ".[tracking]"'
DEFAULT_PROJECT = "fpt"
RUN_TAG = "fpt.run"  # MLflow: the run path, by which a resumed job finds its run


class TrackingError(ValueError):
    """A tracking setting that cannot be honoured: a bad value or a missing package."""


# --- the setting ------------------------------------------------------------------------


def parse(raw: str) -> dict[str, Any]:
    """The setting in FPT_TRACKING's form: a JSON object, or a bare backend name."""
    raw = raw.strip()
    try:
        value = json.loads(raw) if raw.startswith("{") else {"backend": raw}
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{ENV}={raw!r} is not valid JSON: {exc}") from None
    return check(value, f"{ENV}={raw!r}")


def check(value: Any, where: str) -> dict[str, Any]:
    """`value` as a tracking setting, or TrackingError naming `where` and what is allowed."""
    if not isinstance(value, dict):
        raise TrackingError(f"{where}: expected an object with keys {', '.join(KEYS)}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise TrackingError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}"
        )
    backend = value.get("backend", "none")
    if backend not in BACKENDS:
        raise TrackingError(
            f"{where}: unknown tracking backend {backend!r}; allowed: {', '.join(BACKENDS)}"
        )
    for key in ("dir", "project"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise TrackingError(f"{where}: {key} must be a string")
    return {"backend": backend, **{k: value[k] for k in ("dir", "project") if value.get(k)}}


def from_env() -> dict[str, Any] | None:
    """The setting FPT_TRACKING holds; None when it is unset or empty."""
    raw = os.environ.get(ENV, "").strip()
    return parse(raw) if raw else None


def resolve(setting: dict[str, Any] | None, results_dir: str | Path, label: str) -> dict:
    """The config's `tracking` block as the jobs get it: `dir` made absolute (default
    RESULTS/tracking/<backend>) and `project` filled in (default: the config's label)."""
    value = check(dict(setting or {}), CONFIG_KEY)
    backend = value["backend"]
    if backend == "none":
        return {"backend": "none"}
    directory = Path(value.get("dir") or Path(results_dir) / "tracking" / backend)
    return {
        "backend": backend,
        "dir": str(directory.resolve()),
        "project": value.get("project") or label,
    }


def export(setting: dict[str, Any] | None, results_dir: str | Path, label: str) -> str:
    """Put the config's `tracking` block in this process's environment (FPT_TRACKING, see
    `resolve`), so the processes it starts (Snakemake's jobs, SLURM's included) track as
    it says. The config decides: backend none exports {"backend": "none"}, turning off an
    FPT_TRACKING the shell had. Returns the value."""
    value = json.dumps(resolve(setting, results_dir, label), sort_keys=True)
    os.environ[ENV] = value
    return value


def default_dir(spec: RunSpec, out_dir: str | Path, backend: str) -> Path:
    """RESULTS/tracking/<backend> when `out_dir` is RESULTS/runs/<run path>, else
    OUT/tracking/<backend>."""
    out = Path(out_dir)
    parts = tuple(spec.path.split("/"))
    n = len(parts)
    if out.parts[-n:] == parts and len(out.parts) > n + 1 and out.parts[-n - 1] == "runs":
        return out.parents[n] / "tracking" / backend
    return out / "tracking" / backend


def open_tracker(spec: RunSpec, out_dir: Path) -> Tracker | None:
    """The tracker the environment's tracking setting (FPT_TRACKING: exported by the
    Snakefile from the config's `tracking:`; set it by hand for `fpt train`) asks for, for
    run `spec` writing to `out_dir`; None when tracking is off (unset, or backend none).
    Raises TrackingError for a bad setting or a backend whose package is missing."""
    setting = from_env()
    if setting is None or setting["backend"] == "none":
        return None
    backend = setting["backend"]
    cls = TRACKERS[backend]
    cls.check_installed()
    directory = Path(setting["dir"]) if setting.get("dir") else default_dir(spec, out_dir, backend)
    tracker = cls(spec, directory, setting.get("project") or DEFAULT_PROJECT)
    log.info("tracking %s with %s in %s", spec.path, backend, directory)
    return tracker


# --- what is logged -----------------------------------------------------------------------


def run_params(spec: RunSpec) -> dict[str, Any]:
    """A run's parameters as trackers record them: its axes (lr and seed as numbers), its
    settings hash and path, and its other settings (JSON text where not a scalar)."""
    params: dict[str, Any] = {
        **spec.axis_values(),
        "lr": spec.lr,
        "seed": spec.seed,
        "settings": spec.settings_hash(),
        "run": spec.path,
    }
    for key, value in spec.settings().items():
        if key not in params:
            scalar = isinstance(value, int | float | str | bool)
            params[key] = value if scalar else json.dumps(value, sort_keys=True)
    return params


def evaluation_metrics(step: int, rows: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """The metrics rows of evaluations as {step: {"<split>/loss": .., "<split>/accuracy":
    .., "wall_s": ..}}, each at its row's step."""
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        values = out.setdefault(int(row.get("step", step)), {})
        split = row["split"]
        values[f"{split}/loss"] = float(row["loss"])
        values[f"{split}/accuracy"] = float(row["accuracy"])
        if row.get("wall_s") is not None:
            values["wall_s"] = float(row["wall_s"])
    return out


# --- trackers -----------------------------------------------------------------------------


class Tracker:
    """Receives a run's evaluation rows as they are recorded (`log`) and ends the tracker run
    (`close`). A backend opens its run at the first `log`, when the first step of this
    process is known (resumed or not); a failure there or later is a warning that ends
    tracking for this run, never an error of the training. A process that exits without
    `close` (preempted, killed by an exception) marks its tracker run as ended at exit."""

    backend = "none"
    package = ""  # the pip package the backend needs
    module = ""  # what is imported to check it is there

    def __init__(self, spec: RunSpec, directory: Path, project: str) -> None:
        self.spec = spec
        self.dir = Path(directory)
        self.project = project
        self._started = False
        self._failed = False
        self._closed = False
        atexit.register(self._at_exit)

    @classmethod
    def check_installed(cls) -> None:
        """TrackingError naming the package and the install line if it cannot be imported."""
        if not cls.module:
            return
        try:
            importlib.import_module(cls.module)
        except ImportError as exc:
            raise TrackingError(
                f"tracking backend {cls.backend!r} (the config's tracking.backend, or {ENV}) "
                f"needs the Python package {cls.package}, which cannot be imported ({exc}). "
                f"Install the tracking extras: {INSTALL} (or: pip install {cls.package}); or "
                f"turn tracking off (tracking: {{backend: none}}, or unset {ENV})."
            ) from None

    def log(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Mirror one evaluation's metrics rows (at `step`)."""
        if self._failed or self._closed or not rows:
            return
        metrics = evaluation_metrics(step, rows)
        try:
            if not self._started:
                self._start(min(metrics))
                self._started = True
            for s in sorted(metrics):
                self._write(s, metrics[s])
            self._flush()
        except Exception as exc:  # tracking must never stop training
            self._failed = True
            log.warning(
                "tracking %s with %s in %s failed at step %d (%s: %s); no more tracking for "
                "this run, training goes on (metrics.parquet is complete)",
                self.spec.path,
                self.backend,
                self.dir,
                step,
                type(exc).__name__,
                exc,
            )
            with contextlib.suppress(Exception):
                self._end(ok=False)

    def close(self) -> None:
        """End the tracker run (the training run finished)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if self._started and not self._failed:
            try:
                self._end(ok=True)
            except Exception as exc:
                log.warning(
                    "tracking %s with %s: closing failed (%s: %s)",
                    self.spec.path,
                    self.backend,
                    type(exc).__name__,
                    exc,
                )

    def _at_exit(self) -> None:
        """The process ends without `close` (preemption, an error): end the tracker run as
        not finished, quietly; a resumed job continues it."""
        if self._closed:
            return
        self._closed = True
        if self._started and not self._failed:
            with contextlib.suppress(Exception):
                self._end(ok=False)

    # a backend implements these
    def _start(self, first_step: int) -> None:
        raise NotImplementedError

    def _write(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        pass

    def _end(self, ok: bool) -> None:
        pass


class TensorBoardTracker(Tracker):
    """Event files in DIR/<run path>/, via torch.utils.tensorboard."""

    backend = "tensorboard"
    package = "tensorboard"
    module = "torch.utils.tensorboard"

    @property
    def logdir(self) -> Path:
        return self.dir / self.spec.path

    def _start(self, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        earlier = any(self.logdir.glob("events.out.tfevents.*"))
        # purge_step: readers drop the earlier attempts' events from this step on
        self.writer = SummaryWriter(
            str(self.logdir), purge_step=first_step if earlier else None, flush_secs=3600
        )
        if not earlier or first_step == 0:
            self._write_params()

    def _write_params(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = run_params(self.spec)
        for summary in hparams(params, {}):  # the HParams dashboard's session of this run
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("run", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def _write(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def _flush(self) -> None:
        self.writer.flush()  # on disk at each evaluation: a killed job loses nothing

    def _end(self, ok: bool) -> None:
        self.writer.close()


class MLflowTracker(Tracker):
    """One MLflow run per fpt run in the file store DIR, experiment = project."""

    backend = "mlflow"
    package = "mlflow-skinny"
    module = "mlflow.tracking"

    def _start(self, first_step: int) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        # MLflow 3 refuses the file store unless allowed (it is in maintenance mode); a file
        # store suits many jobs on a shared file system, each writing its own run's folder.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.dir.resolve().as_uri())
        experiment = self.client.get_experiment_by_name(self.project)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(self.project)
            except MlflowException:  # another job created it meanwhile
                experiment_id = self.client.get_experiment_by_name(self.project).experiment_id
        self.logged: dict[str, int] = {}  # metric -> last step the run holds
        earlier = None
        if first_step > 0:
            found = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{RUN_TAG}` = '{self.spec.path}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            earlier = found[0] if found else None
        if earlier is not None:
            self.run_id = earlier.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            for key in earlier.data.metrics:
                steps = [m.step for m in self.client.get_metric_history(self.run_id, key)]
                self.logged[key] = max(steps, default=-1)
            return
        from mlflow.entities import Param

        tags = {RUN_TAG: self.spec.path, "fpt.settings": self.spec.settings_hash()}
        run = self.client.create_run(experiment_id, run_name=self.spec.path, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in run_params(self.spec).items()]
        self.client.log_batch(self.run_id, params=params)

    def _write(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, step) for k, v in values.items() if step > self.logged.get(k, -1)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
            for m in metrics:
                self.logged[m.key] = step

    def _end(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED")


# W&B, offline only: what the tracker sets in the environment while it starts a run (the
# wandb-core service it starts inherits it), and restores after.
WANDB_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",  # no crash reports sent anywhere
}


# ...and where wandb keeps its own files (its service's logs, settings, staging), unless the
# environment says: under the tracking dir, not the home folder.
WANDB_HOME_ENV = {
    "WANDB_CACHE_DIR": "cache",
    "WANDB_CONFIG_DIR": "config",
    "WANDB_DATA_DIR": "data",
}


@contextlib.contextmanager
def _environ(values: dict[str, str], defaults: dict[str, str] | None = None) -> Iterator[None]:
    """`values` (and `defaults` where unset) in os.environ for the block, then as before."""
    defaults = {k: v for k, v in (defaults or {}).items() if not os.environ.get(k)}
    values = {**defaults, **values}
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class WandbTracker(Tracker):
    """Offline W&B runs in DIR/wandb/, id from the run path, resumed by id."""

    backend = "wandb"
    package = "wandb"
    module = "wandb"

    @property
    def base_id(self) -> str:
        return hashlib.sha1(self.spec.path.encode()).hexdigest()[:16]

    def attempts(self) -> list[tuple[str, Path]]:
        """(run id, .wandb file) of this run's earlier offline runs in DIR, oldest first."""
        base = self.base_id
        found = []
        for f in (self.dir / "wandb").glob("offline-run-*/run-*.wandb"):
            run_id = f.name[len("run-") : -len(".wandb")]
            if run_id == base or re.fullmatch(re.escape(base) + r"-\d+", run_id):
                n = int(run_id[len(base) + 1 :] or 1)
                found.append((f.stat().st_mtime_ns, n, run_id, f))
        return [(run_id, f) for *_, run_id, f in sorted(found)]

    def pick_run(self, first_step: int) -> tuple[str, int]:
        """The run id this job logs to and the last step that run already holds (-1: none).
        A job resumed from a checkpoint (first step > 0) continues the newest run of this
        path; one from step 0 starts a new run: the path's id, or with a suffix -2, -3, ...
        if an earlier run has it."""
        attempts = self.attempts()
        if first_step > 0 and attempts:
            run_id = attempts[-1][0]
            steps = [-1]
            for rid, f in attempts:
                if rid == run_id:
                    try:
                        steps += [row.get("_step", -1) for row in wandb_offline_history(f)]
                    except Exception as exc:  # a killed job's torn file: log its steps again
                        log.warning("cannot read %s (%s); its steps may be logged twice", f, exc)
            return run_id, max(steps)
        ids = {rid for rid, _ in attempts}
        run_id, n = self.base_id, 1
        while run_id in ids:
            n += 1
            run_id = f"{self.base_id}-{n}"
        return run_id, -1

    def _start(self, first_step: int) -> None:
        import wandb

        run_id, self.last_step = self.pick_run(first_step)
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            mode="offline",
            silent=True,
            console="off",
            disable_git=True,
            save_code=False,
            disable_code=True,
            x_disable_stats=True,
            x_disable_machine_info=True,
            x_disable_meta=True,
            init_timeout=120,
        )
        params = run_params(self.spec)
        tags = [f"{k}={v}" for k, v in self.spec.axis_values().items()][:20]
        home = {k: str(self.dir / "wandb-home" / v) for k, v in WANDB_HOME_ENV.items()}
        with _environ(WANDB_ENV, home):
            self.run = wandb.init(
                project=re.sub(r"[^A-Za-z0-9._-]+", "-", self.project),
                name=self.spec.path,
                id=run_id,
                resume="allow",
                dir=str(self.dir),
                config=params,
                tags=[t[:64] for t in tags],
                settings=settings,
                reinit="create_new",
            )

    def _write(self, step: int, values: dict[str, float]) -> None:
        if step > self.last_step:
            self.run.log(values, step=step)
            self.last_step = step

    def _end(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


TRACKERS: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MLflowTracker,
    "wandb": WandbTracker,
}


# --- reading an offline W&B run back -----------------------------------------------------

_WANDB_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)
_BLOCK = 32768


def wandb_offline_history(path: str | Path) -> list[dict[str, Any]]:
    """The history rows (`run.log` calls, with `_step`) of an offline W&B run's
    `run-<id>.wandb` file: W&B's transaction log, in LevelDB's log format of 32 KiB blocks
    of chunked records, each a wandb_internal_pb2.Record. (wandb has no public reader of
    it; `wandb sync` uploads it.)"""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if not data:  # created, nothing written yet
        return []
    ident, magic, _ = _WANDB_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B transaction log")
    records, pending, pos = [], b"", _WANDB_HEADER.size
    while pos + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER.size:  # a block's zero-filled tail
            pos += room
            continue
        _, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        chunk = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        pos += _CHUNK_HEADER.size + length
        if len(chunk) < length:  # a torn tail (the writer was killed): what came before
            break
        if kind == 0:  # padding to the block's end
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
            pending = b""
    rows = []
    for blob in records:
        record = pb.Record()
        record.ParseFromString(blob)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
