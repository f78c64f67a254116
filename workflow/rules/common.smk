# Functions the rule files share; no rules here (lint wants the two apart). Which runs
# each experiment needs, where files live, the downloads a config needs. Code that is not
# about paths lives in fpt/workflow_support.py.
import json
import shlex

from fpt import protocol as fpt_protocol
from fpt.data import dataset_of_folder
from fpt.tasks import DATASETS, required_files
from fpt.models.families import FAMILIES, family, size_info


def run_metrics(path):
    return f"{RESULTS}/runs/{path}/metrics.parquet"


def experiment_runs(experiment):
    return [run_metrics(p) for p in GRID.experiments[experiment]]


def run_weights(run):
    """Pretrained runs of hub-hosted backbones wait for their weights folder (made by the
    download_weights rule); packaged weights (minilm) and random init need nothing."""
    spec = GRID.runs[run]
    if spec.init not in (
        "pretrained",
        "stats",
    ):  # stats init redraws the pretrained tensors
        return []
    fam = family(spec.backbone)
    if (
        fam.package_dir is not None
        and spec.size == fam.default_size
        and fam.package_dir() is not None
    ):
        return []
    return [f"{WEIGHTS}/{size_info(spec.backbone, spec.size).local_name}/config.json"]


def weights_input(wildcards):
    return run_weights(wildcards.run)


def run_data(run):
    """A run's dataset markers (or its generated ListOps files), as its task declares them
    (Task.required_files); the bit tasks and digits need nothing."""
    spec = GRID.runs[run]
    return required_files(spec.task, spec.options, DATA)


def data_input(wildcards):
    return run_data(wildcards.run)


def config_weights():
    """Every weights folder the config's runs need (target fetch_weights)."""
    return sorted({f for r in GRID.runs for f in run_weights(r)})


def config_data():
    """Every dataset and generated ListOps the config's runs need."""
    return sorted({f for r in GRID.runs for f in run_data(r)})


def dataset_marker(name):
    """Where rule fetch_data puts dataset `name` (declared by its task's module)."""
    return str(DATASETS[name].marker(DATA))


def fetch_dataset(wildcards):
    """The dataset a fetch_data job fetches (the one stored in its output's folder)."""
    return dataset_of_folder(wildcards.dataset_folder)


def fetch_args(local_name):
    for fam in FAMILIES.values():
        for size, info in fam.sizes.items():
            if info.local_name == local_name:
                return f"--backbone {fam.name} --size {size}"
    raise ValueError(f"no backbone size stores its weights as {local_name!r}")


def init_input(wildcards):
    """init=bit_memory runs wait for their Bit Memory pretraining run (an ordinary run of the
    grid, fpt.grid.bit_memory_source); its metrics.parquet is written after its final
    checkpoint, which is what the dependent run loads."""
    src = GRID.sources.get(wildcards.run)
    return [run_metrics(src)] if src else []


def init_from(run):
    """--init-from for init=bit_memory runs."""
    return (
        f"--init-from {RESULTS}/runs/{GRID.sources[run]}" if run in GRID.sources else ""
    )


def train_args(run):
    """`fpt train` arguments of a run, plus --init-from for init=bit_memory runs."""
    return " ".join([*GRID.runs[run].cli_args(), init_from(run)]).strip()


def train_benchmarks():
    """One benchmark per training job: each lone run's, each pack's (in train_jobs order)."""
    return [f"{RESULTS}/benchmarks/train/{job}.tsv" for job in fpt_ws.train_jobs(GRID)]


def pack_rule_name(pack):
    return f"train_{pack.replace('-', '_')}"


def pack_inputs(runs):
    """What a pack's runs wait for: their weights and data (as rule train's inputs)."""
    return sorted({f for r in runs for f in [*run_weights(r), *run_data(r)]})


def pack_args(runs):
    """`fpt train-pack` arguments: each run's spec as JSON."""
    return " ".join(
        f"--spec {shlex.quote(json.dumps(GRID.runs[r].to_json(), sort_keys=True))}"
        for r in runs
    )


def pack_results(runs):
    """`fpt train-pack --results`: the runs folder, from the pack's first output."""
    tail = len(run_metrics(runs[0])) - len(
        f"{RESULTS}/runs"
    )  # the run's part of the path
    return lambda wildcards, output: output[0][:-tail]


def pack_resources(runs):
    return fpt_ws.train_resources([GRID.runs[r] for r in runs], config)


def pack_runtime(runs):
    """A pack's runtime resource: its estimate, growing with each retry as rule train's."""
    minutes = pack_resources(runs)["runtime"]
    return lambda wildcards, attempt: minutes * attempt


def selection_runs(wildcards):
    runs = GRID.selections.get(wildcards.experiment, {}).get(wildcards.config)
    if not runs:
        raise ValueError(
            f"{wildcards.experiment}/{wildcards.config} is not a config of a swept experiment "
            "in this config file (fpt.grid.Grid.selections)"
        )
    return [run_metrics(r) for r in runs]


def experiment_selections(experiment):
    return [
        f"{RESULTS}/{fpt_protocol.selection_path(experiment, c)}"
        for c in GRID.selections.get(experiment, {})
    ]


def selected_files():
    """Every swept experiment's selections (rule all asks for them)."""
    return [
        f"{RESULTS}/{fpt_protocol.selected_path(e)}"
        for e, p in GRID.protocols.items()
        if p == "swept"
    ]


def target_metrics(target):
    return {
        e: f"{RESULTS}/experiments/{e}/metrics.parquet"
        for e in target.experiments
        if e in GRID.experiments
    }


def target_outputs(target):
    """A table's or figure's files: in the report, each table's html (shown inline) and md,
    and each figure's png with its csv (the numbers plotted) under the figure's own
    subcategory; the rest (tex, csv of tables, pdf) are plain outputs."""
    shown = {"table": ("html", "md"), "figure": ("png", "csv")}[target.kind]
    return {
        ext: in_report(target, ext, str(p)) if ext in shown else str(p)
        for ext, p in target.outputs(FIGURES).items()
    }


def in_report(target, ext, path):
    sub = target.name if target.kind == "figure" else None
    labels = {"name": target.name, "format": ext}
    caption = "../report/caption.rst"
    return report(
        path,
        caption=caption,
        category=f"{target.kind}s",
        subcategory=sub,
        labels=labels,
    )
