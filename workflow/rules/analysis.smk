# One rule per table and figure (fpt/analysis/targets.py), named as its files. Each reads the
# collected metrics of its own experiments only (and, for attention maps, the arrays rule
# `attention` saves from final checkpoints) and lists its own module plus the shared
# analysis helpers as inputs. With the profile's rerun triggers (mtime, params, input):
# editing a plot's module reruns that plot and nothing else; editing a caption reruns that
# target (params); training is never touched. Every target renders for every config: cells
# and panels the config has no runs for say "not in <label>".
from fpt.analysis import targets as fpt_targets
from fpt.analysis.attention import attention_path
import yaml


localrules:
    attention,
    config_snapshot,


def target_metrics(target):
    return {e: f"{RESULTS}/experiments/{e}/metrics.parquet" for e in target.experiments if e in GRID.experiments}


for _name, _target in TARGETS.items():

    rule:
        name:
            _name
        input:
            metrics=list(target_metrics(_target).values()),
            extra=[f"{RESULTS}/{p}" for p in _target.extra_inputs(GRID)],
            code=_target.code(),
        output:
            **{
                ext: (
                    report(str(p), caption="../report/caption.rst", category=_target.kind + "s", labels={"name": _name, "format": ext})
                    if ext in ("png", "md")
                    else str(p)
                )
                for ext, p in _target.outputs(FIGURES).items()
            },
        params:
            name=_name,
            caption=_target.caption,
            experiments=list(target_metrics(_target)),
        localrule: True
        run:
            fpt_targets.build(
                params.name,
                metrics=dict(zip(params.experiments, input.metrics, strict=True)),
                out={k: Path(v) for k, v in output.items()},
                extra=list(input.extra),
                label=config["label"],
                settings=config["analysis"],
            )


rule attention:
    """First-layer attention of a finished run, from its final checkpoint (local: one
    forward pass over a few hundred test examples)."""
    input:
        run_metrics("{run}"),
        init_input,
    output:
        f"{RESULTS}/{attention_path('{run}')}",
    log:
        f"{RESULTS}/logs/attention/{{run}}.log",
    wildcard_constraints:
        run=r"task=[^ ]+?/settings=[0-9a-f]{8}",
    params:
        run_dir=lambda w: f"{RESULTS}/runs/{w.run}",
        init_from=lambda w: f"--init-from {RESULTS}/runs/{GRID.sources[w.run]}" if w.run in GRID.sources else "",
        examples=config["analysis"].get("attention_examples", 256),
    threads: 1
    shell:
        "python -m fpt attention --run-dir {params.run_dir} --out {output} --threads {threads} "
        "--weights-dir {config[weights_dir]} --data-dir {config[data_dir]} {params.init_from} "
        "--examples {params.examples} > {log} 2>&1"


rule config_snapshot:
    """The validated config (defaults filled) beside the tables, and in the report."""
    output:
        report(f"{FIGURES}/config.yaml", caption="../report/config.rst", category="config"),
    params:
        text=lambda w: yaml.safe_dump(dict(config), sort_keys=False),
    run:
        Path(output[0]).write_text(params.text)
