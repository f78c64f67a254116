# Learning-rate selection for experiments with `protocol: swept` (fpt/protocol.py): the sweep's
# runs of one config (every axis but lr, seed included) -> the chosen lr; then one file per
# experiment that the tables and figures read. The runs of each config are known from the
# config, so the whole sweep shows in a dry run and no Snakemake checkpoint is needed.
from fpt import protocol as fpt_protocol


localrules:
    select_lr,
    selected,


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


# Every swept experiment's selections (rule all asks for them).
SELECTED = [
    f"{RESULTS}/{fpt_protocol.selected_path(e)}" for e, p in GRID.protocols.items() if p == "swept"
]


rule select_lr:
    """One config's lr: the best val accuracy among its sweep's runs (ties: lower val loss,
    then the smaller lr), with every candidate recorded."""
    input:
        selection_runs,
    output:
        f"{RESULTS}/experiments/{{experiment}}/selections/{{config}}/selection.parquet",
    wildcard_constraints:
        experiment=r"[a-z][a-z0-9_]*",
        config=r"task=[^ ]+?/settings=[0-9a-f]{8}",
    run:
        fpt_protocol.write_selection(input, output[0], wildcards.experiment, wildcards.config)


rule selected:
    """A swept experiment's selections, every config, in one file."""
    input:
        lambda w: experiment_selections(w.experiment),
    output:
        f"{RESULTS}/experiments/{{experiment}}/selected.parquet",
    wildcard_constraints:
        experiment=r"[a-z][a-z0-9_]*",
    run:
        fpt_protocol.write_selected(input, output[0])
