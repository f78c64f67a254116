# Collection: run files -> one Parquet per experiment (what tables read, so a target depends
# only on its experiment's runs) and one for all runs.
from fpt.analysis.collect import collect as collect_runs


localrules:
    collect,
    collect_experiment,


rule collect_experiment:
    input:
        lambda w: experiment_runs(w.experiment),
    output:
        f"{RESULTS}/experiments/{{experiment}}/metrics.parquet",
    log:
        f"{RESULTS}/logs/collect/{{experiment}}.log",
    run:
        fpt_ws.logged(collect_runs, log[0], output, input, output[0])


rule collect:
    input:
        [run_metrics(p) for p in GRID.runs],
    output:
        f"{RESULTS}/metrics.parquet",
    log:
        f"{RESULTS}/logs/collect/all.log",
    run:
        fpt_ws.logged(collect_runs, log[0], output, input, output[0])
