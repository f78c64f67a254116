# Learning-rate selection for experiments with `protocol: swept` (fpt/protocol.py): the sweep's
# runs of one config (every axis but lr, seed included) -> the chosen lr; then one file per
# experiment that the tables and figures read. The runs of each config are known from the
# config, so the whole sweep shows in a dry run and no Snakemake checkpoint is needed.


localrules:
    select_lr,
    selected,


rule select_lr:
    """One config's lr: the best val accuracy among its sweep's runs (ties: lower val loss,
    then the smaller lr), with every candidate recorded."""
    input:
        selection_runs,
    output:
        f"{RESULTS}/experiments/{{experiment}}/selections/{{config}}/selection.parquet",
    log:
        f"{RESULTS}/logs/select_lr/{{experiment}}/{{config}}.log",
    run:
        fpt_ws.logged(
            fpt_protocol.write_selection,
            log[0],
            output,
            input,
            output[0],
            *wildcards,
        )


rule selected:
    """A swept experiment's selections, every config, in one file."""
    input:
        lambda w: experiment_selections(w.experiment),
    output:
        f"{RESULTS}/experiments/{{experiment}}/selected.parquet",
    log:
        f"{RESULTS}/logs/selected/{{experiment}}.log",
    run:
        fpt_ws.logged(fpt_protocol.write_selected, log[0], output, input, output[0])
