# Training: one job = one run (or one fused pack) = at most one GPU. On a workstation `fpt train`
# leases a slot of one GPU (fpt/gpu_lease.py: config gpus, runs_per_gpu) and sees only it; its
# resource gpu=1 counts slots, of which the Snakefile registers as many as the GPUs found x
# runs_per_gpu, so every slot gets a job and none starts to wait for one.
# Checkpoints live in the run folder but are not declared outputs, so Snakemake never
# deletes them and a rerun resumes. Its resources
# come from the config (train_threads, train_mem_mb, train_runtime_min, device; the last two
# `auto` = estimated per run by fpt.plan, see `fpt plan`) and nowhere
# else: the profiles do not override them. Each job's measured wall time and memory
# (benchmark) are gathered by rule resource_table into RESULTS/benchmarks/train.tsv.
#
# The run's log holds every attempt, in order: `fpt train --log` starts each with a header line
# (host, pid, SLURM job, time) and keeps them all although Snakemake deletes a job's log before
# it runs (fpt/attempt_log.py).


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
    threads: TRAIN_THREADS
    resources:
        # train_mem_mb / train_runtime_min: auto = the run's estimate (fpt/plan/, cached per
        # model shape), or a number for every job.
        mem_mb=lambda wc: fpt_ws.train_resources([GRID.runs[wc.run]], config)["mem_mb"],
        # Grows with each retry: a run that timed out gets more time and resumes.
        runtime=lambda wc, attempt: (
            fpt_ws.train_resources([GRID.runs[wc.run]], config)["runtime"] * attempt
        ),
        # one GPU slot per job that leases one (none with device cpu or on a machine without GPUs)
        gpu=TRAIN_GPU,
    params:
        args=lambda w: train_args(w.run),
        out=lambda w: f"{RESULTS}/runs/{w.run}",
        device=config["device"],
        weights_dir=WEIGHTS,
        data_dir=DATA,
    shell:
        "python -m fpt train {params.args} --out {params.out} --device {params.device} "
        "--threads {threads} --weights-dir {params.weights_dir} --data-dir {params.data_dir} "
        "--log {log}"


# Fused packs (config pack_size > 1; fpt/packs.py groups, fpt/fused.py trains): one job per
# pack, one output per run, each run in its own folder exactly as a lone run leaves it. A rule
# per pack (outputs without wildcards, which Snakemake prefers to rule train's pattern for the
# same files). The log keeps every attempt as rule train's does, under the pack's name.
for _pack, _runs in GRID.packs.items():

    rule:
        name:
            pack_rule_name(_pack)
        input:
            pack_inputs(_runs),
        output:
            [run_metrics(r) for r in _runs],
        log:
            f"{RESULTS}/logs/train/{_pack}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{_pack}.tsv"
        conda:
            "../envs/fpt.yaml"
        threads: TRAIN_THREADS
        resources:
            mem_mb=pack_resources(_runs)["mem_mb"],
            runtime=pack_runtime(_runs),
            gpu=TRAIN_GPU,
        params:
            args=pack_args(_runs),
            results=pack_results(_runs),
            device=config["device"],
            # functions, as rule train's inputs are: the lint's fixed-prefix check does not
            # apply to machine folders passed as they are to every job
            weights_dir=lambda w: WEIGHTS,
            data_dir=lambda w: DATA,
        shell:
            "python -m fpt train-pack {params.args} --results {params.results} "
            "--device {params.device} --threads {threads} --weights-dir {params.weights_dir} "
            "--data-dir {params.data_dir} --log {log}"


rule resource_table:
    """Every run's measured wall time (s), peak memory (max_rss, MB), I/O and CPU time beside
    its task, backbone and size: what to size train_runtime_min / train_mem_mb from."""

    # The runs' metrics, not their benchmarks, are the inputs: Snakemake removes the empty
    # folders of missing inputs when it ends, which would take a running job's benchmark
    # folder from under it. Each job writes its benchmark before it counts as finished.
    input:
        [run_metrics(r) for r in GRID.runs],
    output:
        f"{RESULTS}/benchmarks/train.tsv",
    log:
        f"{RESULTS}/logs/resource_table.log",
    params:
        benchmarks=lambda w: train_benchmarks(),
        runs=fpt_ws.run_descriptions(GRID),
    run:
        fpt_ws.resource_table(params.benchmarks, params.runs, output[0], log[0])
