# Training: one job = one run = at most one GPU. Checkpoints live in the run folder but are
# not declared outputs, so Snakemake never deletes them and a rerun resumes. Its resources
# come from the config (train_threads, train_mem_mb, train_runtime_min, device) and nowhere
# else: the profiles do not override them. Each job's measured wall time and memory
# (benchmark) are gathered by rule resource_table into RESULTS/benchmarks/train.tsv.


localrules:
    resource_table,


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
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    conda:
        "../envs/fpt.yaml"
    threads: config["train_threads"]
    resources:
        mem_mb=config["train_mem_mb"],
        # Grows with each retry: a run that timed out gets more time and resumes.
        runtime=lambda wc, attempt: config["train_runtime_min"] * attempt,
        gpu=0 if config["device"] == "cpu" else 1,
    params:
        args=lambda w: train_args(w.run),
        out=lambda w: f"{RESULTS}/runs/{w.run}",
        device=config["device"],
        weights_dir=WEIGHTS,
        data_dir=DATA,
    shell:
        "python -m fpt train {params.args} --out {params.out} --device {params.device} "
        "--threads {threads} --weights-dir {params.weights_dir} --data-dir {params.data_dir} > {log} 2>&1"


rule resource_table:
    """Every run's measured wall time (s), peak memory (max_rss, MB), I/O and CPU time beside
    its task, backbone and size: what to size train_runtime_min / train_mem_mb from."""
    input:
        train_benchmarks(),
    output:
        f"{RESULTS}/benchmarks/train.tsv",
    log:
        f"{RESULTS}/logs/resource_table.log",
    params:
        runs=fpt_ws.run_descriptions(GRID),
    run:
        fpt_ws.resource_table(input, params.runs, output[0], log[0])
