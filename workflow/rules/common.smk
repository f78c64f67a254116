# Helpers shared by the rule files: which runs each experiment needs, where files live.
from fpt.models.backbones import family, size_info


def run_metrics(path):
    return f"{RESULTS}/runs/{path}/metrics.parquet"


def experiment_runs(experiment):
    return [run_metrics(p) for p in GRID.experiments[experiment]]


def weights_input(wildcards):
    """Pretrained runs of hub-hosted backbones wait for their weights folder (rule
    fetch_weights); packaged weights (minilm) and random init need nothing."""
    spec = GRID.runs[wildcards.run]
    if spec.init not in ("pretrained", "stats"):  # stats init redraws the pretrained tensors
        return []
    fam = family(spec.backbone)
    if fam.package_dir is not None and spec.size == fam.default_size and fam.package_dir() is not None:
        return []
    return [f"{config['weights_dir']}/{size_info(spec.backbone, spec.size).local_name}/config.json"]


def init_input(wildcards):
    """init=bit_memory runs wait for their Bit Memory pretraining run (an ordinary run of the
    grid, fpt.grid.bit_memory_source); its metrics.parquet is written after its final
    checkpoint, which is what the dependent run loads."""
    src = GRID.sources.get(wildcards.run)
    return [run_metrics(src)] if src else []


def train_args(run):
    """`fpt train` arguments of a run, plus --init-from for init=bit_memory runs."""
    args = GRID.runs[run].cli_args()
    if run in GRID.sources:
        args += ["--init-from", f"{RESULTS}/runs/{GRID.sources[run]}"]
    return " ".join(args)
