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
    if spec.init != "pretrained":
        return []
    fam = family(spec.backbone)
    if fam.package_dir is not None and spec.size == fam.default_size and fam.package_dir() is not None:
        return []
    return [f"{config['weights_dir']}/{size_info(spec.backbone, spec.size).local_name}/config.json"]
