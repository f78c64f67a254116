# Training: one job = one run = at most one GPU. Checkpoints live in the run folder but are
# not declared outputs, so Snakemake never deletes them and a rerun resumes.
from fpt.models.backbones import FAMILIES


localrules:
    fetch_weights,


rule fetch_weights:
    """Download pretrained weights on the submit host (compute nodes often have no internet)."""
    output:
        f"{config['weights_dir']}/{{name}}/config.json",
    log:
        f"{RESULTS}/logs/fetch_weights/{{name}}.log",
    params:
        args=lambda w: fetch_args(w.name),
    shell:
        "python -m fpt fetch-weights {params.args} --weights-dir {config[weights_dir]} > {log} 2>&1"


def fetch_args(local_name):
    for fam in FAMILIES.values():
        for size, info in fam.sizes.items():
            if info.local_name == local_name:
                return f"--backbone {fam.name} --size {size}"
    raise ValueError(f"no backbone size stores its weights as {local_name!r}")


rule train:
    """Train one grid point; `fpt train` resumes from the run's checkpoint when one exists."""
    input:
        weights_input,
        data_input,
        init_input,
    output:
        f"{RESULTS}/runs/{{run}}/metrics.parquet",
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    wildcard_constraints:
        run=r"task=[^ ]+?/settings=[0-9a-f]{8}",
    params:
        args=lambda w: train_args(w.run),
        out=lambda w: f"{RESULTS}/runs/{w.run}",
    threads: config["train_threads"]
    resources:
        mem_mb=config["train_mem_mb"],
        # Grows with each retry: a run that timed out gets more time and resumes.
        runtime=lambda wc, attempt: config["train_runtime_min"] * attempt,
        gpu=0 if config["device"] == "cpu" else 1,
    shell:
        "python -m fpt train {params.args} --out {params.out} --device {config[device]} "
        "--threads {threads} --weights-dir {config[weights_dir]} --data-dir {config[data_dir]} > {log} 2>&1"
