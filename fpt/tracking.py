"""Optional experiment tracking: mirror each evaluation of a run to TensorBoard, MLflow or
W&B (offline), through each library's public API. Off by default; metrics.parquet stays the
record. The setting (the config's `tracking:`) is the machine's, never part of a RunSpec: it
travels as FPT_TRACKING (JSON, or a bare backend name), which the Snakefile exports for its
jobs (`export`) and `fpt train` by hand reads too.

Each run is one tracker run named by its path, with `run_params`; each evaluation logs
`<split>/loss`, `<split>/accuracy` and `wall_s` at its step. A job resumed from its
checkpoint at step N continues its tracker run the backend's own way, and logs again the
steps after N that the killed job may have logged:

- tensorboard: DIR/<run path>/; the new writer's `purge_step=N` hides the earlier events
  from step N on.
- mlflow: a file store; the run is found again by its tag `fpt.run`; a step logged twice
  holds both values.
- wandb: offline runs in DIR/wandb/, resumed by run id (`resume="allow"`); `wandb sync`
  uploads them in order, and W&B ignores a step below the run's last one.

A job from step 0 starts a new tracker run. A bad setting or a missing package raise
TrackingError (`fpt train` exits 2) before training; a failure while logging is a warning.
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
import time
from pathlib import Path
from typing import Any

from fpt.spec import RunSpec

log = logging.getLogger("fpt.tracking")

ENV = "FPT_TRACKING"
BACKENDS = ("none", "tensorboard", "mlflow", "wandb")
KEYS = ("backend", "dir", "project")
INSTALL = 'pip install -e ".[tracking]"'
DEFAULT_PROJECT = "fpt"
RUN_TAG = "fpt.run"  # MLflow: the run path, by which a resumed job finds its run


class TrackingError(ValueError):
    """A tracking setting that cannot be honoured: a bad value or a missing package."""


def parse(raw: str) -> dict[str, Any]:
    """The setting in FPT_TRACKING's form: a JSON object, or a bare backend name."""
    raw = raw.strip()
    try:
        value = json.loads(raw) if raw.startswith("{") else {"backend": raw}
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{ENV}={raw!r} is not valid JSON: {exc}") from None
    return check(value, f"{ENV}={raw!r}")


def check(value: Any, where: str) -> dict[str, Any]:
    """`value` (a dict) as a tracking setting, or TrackingError naming `where` and what is
    allowed."""
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


def export(setting: dict[str, Any] | None, results_dir: str | Path, label: str) -> str:
    """Put the config's `tracking` block in this process's environment as FPT_TRACKING, for
    the jobs it starts: `dir` made absolute (default RESULTS/tracking/<backend>), `project`
    filled in (default: the config's label). Backend none turns off an FPT_TRACKING the shell
    had. Returns the value."""
    value = check(dict(setting or {}), "tracking")
    if value["backend"] != "none":
        directory = Path(value.get("dir") or Path(results_dir) / "tracking" / value["backend"])
        value = {**value, "dir": str(directory.resolve()), "project": value.get("project", label)}
    os.environ[ENV] = json.dumps(value, sort_keys=True)
    return os.environ[ENV]


def default_dir(spec: RunSpec, out_dir: str | Path, backend: str) -> Path:
    """RESULTS/tracking/<backend> when `out_dir` is RESULTS/runs/<run path>, else
    OUT/tracking/<backend>."""
    out, parts = Path(out_dir), tuple(spec.path.split("/"))
    n = len(parts)
    if out.parts[-n:] == parts and len(out.parts) > n + 1 and out.parts[-n - 1] == "runs":
        return out.parents[n] / "tracking" / backend
    return out / "tracking" / backend


def open_tracker(spec: RunSpec, out_dir: Path) -> Tracker | None:
    """The tracker FPT_TRACKING asks for, for run `spec` writing to `out_dir` (`dir`
    defaults to `default_dir`, `project` to "fpt"); None when tracking is off. Raises
    TrackingError for a bad setting or a missing package."""
    setting = from_env()
    if setting is None or setting["backend"] == "none":
        return None
    cls = TRACKERS[setting["backend"]]
    cls.check_installed()
    directory = Path(setting.get("dir") or default_dir(spec, out_dir, cls.backend))
    log.info("tracking %s with %s in %s", spec.path, cls.backend, directory)
    return cls(spec, directory, setting.get("project") or DEFAULT_PROJECT)


def run_params(spec: RunSpec) -> dict[str, Any]:
    """A run's parameters: its axes, lr, seed, settings hash, path and other settings (JSON
    text where not a scalar)."""
    params = {**spec.axis_values(), "lr": spec.lr, "seed": spec.seed}
    params |= {"settings": spec.settings_hash(), "run": spec.path}
    for key, value in spec.settings().items():
        if key not in params:
            scalar = isinstance(value, int | float | str | bool)
            params[key] = value if scalar else json.dumps(value, sort_keys=True)
    return params


def evaluation_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """One evaluation's rows as {"<split>/loss": .., "<split>/accuracy": .., "wall_s": ..}."""
    out = {}
    for row in rows:
        out[f"{row['split']}/loss"] = float(row["loss"])
        out[f"{row['split']}/accuracy"] = float(row["accuracy"])
        if row.get("wall_s") is not None:
            out["wall_s"] = float(row["wall_s"])
    return out


class Tracker:
    """Receives a run's evaluation rows (`log`) and ends the tracker run (`close`). The
    backend's run opens at the first `log`, when this job's first step is known; a failure
    there or later is a warning that ends tracking for this run, never a training error.
    A backend implements `_start(first_step)`, `_write(step, values)` and `_end(ok)`."""

    backend = package = module = ""  # the name, its pip package, what is imported to check

    def __init__(self, spec: RunSpec, directory: Path, project: str) -> None:
        self.spec, self.dir, self.project = spec, Path(directory), project
        self.started = self.failed = self.closed = False

    @classmethod
    def check_installed(cls) -> None:
        """TrackingError naming the package and the install line if it cannot be imported."""
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
        if rows and not (self.failed or self.closed):
            self._guard(f"at step {step}", self._log, step, evaluation_metrics(rows))

    def close(self, ok: bool = True) -> None:
        """End the tracker run (`ok`: the training run finished)."""
        if self.started and not (self.failed or self.closed):
            self._guard("closing", self._end, ok)
        self.closed = True

    def _log(self, step: int, values: dict[str, float]) -> None:
        if not self.started:
            self._start(step)
            self.started = True
        self._write(step, values)

    def _guard(self, when: str, call, *args) -> None:
        try:
            call(*args)
        except Exception as exc:  # tracking must never stop training
            self.failed = True
            log.warning(
                "tracking %s with %s in %s failed %s (%s: %s); no more tracking for this run, "
                "training goes on (metrics.parquet is complete)",
                *(self.spec.path, self.backend, self.dir, when, type(exc).__name__, exc),
            )
            with contextlib.suppress(Exception):
                self._end(ok=False)


class TensorBoardTracker(Tracker):
    """Event files in DIR/<run path>/, via torch.utils.tensorboard."""

    backend, package, module = "tensorboard", "tensorboard", "torch.utils.tensorboard"

    def _start(self, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # readers drop the earlier jobs' events from first_step on
        self.writer = SummaryWriter(str(self.dir / self.spec.path), purge_step=first_step)
        if first_step == 0:
            params = run_params(self.spec).items()
            self.writer.add_text("run", "\n".join(f"    {k}: {v}" for k, v in params), 0)

    def _write(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # on disk at each evaluation: a killed job loses nothing

    def _end(self, ok: bool) -> None:
        self.writer.close()


class MLflowTracker(Tracker):
    """One MLflow run per fpt run in the file store DIR, experiment = project."""

    backend, package, module = "mlflow", "mlflow-skinny", "mlflow.tracking"

    def _start(self, first_step: int) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3: the file store is opt-in
        self.dir.mkdir(parents=True, exist_ok=True)
        self.client = client = MlflowClient(tracking_uri=self.dir.resolve().as_uri())
        try:
            experiment = client.create_experiment(self.project)
        except MlflowException:  # it exists (another job may have made it meanwhile)
            experiment = client.get_experiment_by_name(self.project).experiment_id
        tag = f"tags.`{RUN_TAG}` = '{self.spec.path}'"
        order = ["attributes.start_time DESC"]
        earlier = first_step > 0 and client.search_runs([experiment], tag, order_by=order)
        if earlier:  # resumed: the newest run of this path
            self.run_id = earlier[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {RUN_TAG: self.spec.path, "fpt.settings": self.spec.settings_hash()}
            run = client.create_run(experiment, tags=tags, run_name=self.spec.path)
            self.run_id = run.info.run_id
            params = [Param(k, str(v)) for k, v in run_params(self.spec).items()]
            client.log_batch(self.run_id, params=params)
        atexit.register(self.close, ok=False)  # the job dies: the run is KILLED until resumed

    def _write(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def _end(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED")


class WandbTracker(Tracker):
    """Offline W&B runs in DIR/wandb/, resumed by run id."""

    backend, package, module = "wandb", "wandb", "wandb"

    def run_id(self, first_step: int) -> str:
        """A resumed job's (first step > 0) id is that of the newest offline run of this
        path (DIR/wandb/offline-run-<time>-<id>); a job from step 0 gets a new one."""
        base = hashlib.sha1(self.spec.path.encode()).hexdigest()[:12]
        earlier = sorted((self.dir / "wandb").glob(f"offline-run-*-{base}-*"))
        if first_step > 0 and earlier:
            return earlier[-1].name.split("-", 3)[3]
        return f"{base}-{time.strftime('%Y%m%d%H%M%S')}"

    def _start(self, first_step: int) -> None:
        import wandb

        os.environ["WANDB_ERROR_REPORTING"] = "false"  # no crash reports sent anywhere
        for var in ("CACHE", "CONFIG", "DATA"):  # wandb's own files: here, not in HOME
            os.environ.setdefault(f"WANDB_{var}_DIR", str(self.dir / "wandb-home" / var.lower()))
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            mode="offline",  # no network, no login
            silent=True,
            console="off",
            disable_git=True,
            save_code=False,
            disable_code=True,
            x_disable_stats=True,  # no system statistics
            x_disable_machine_info=True,
            x_disable_meta=True,
        )
        self.run = wandb.init(
            project=re.sub(r"[^A-Za-z0-9._-]+", "-", self.project),
            name=self.spec.path,
            id=self.run_id(first_step),
            resume="allow",
            dir=str(self.dir),
            config=run_params(self.spec),
            settings=settings,
            reinit="create_new",  # a fused pack: several runs in one process
        )

    def _write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def _end(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


TRACKERS = {cls.backend: cls for cls in (TensorBoardTracker, MLflowTracker, WandbTracker)}
