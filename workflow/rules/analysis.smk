# One rule per table and figure (fpt/analysis/targets.py), named as its files. Each reads the
# collected metrics of its own experiments only (and, for attention maps, the arrays rule
# `attention` saves from final checkpoints) and lists its own module plus the shared
# analysis helpers as inputs. With the profile's rerun triggers (mtime, params, input):
# editing a plot's module reruns that plot and nothing else; editing a caption reruns that
# target (params); training is never touched. Every target renders for every config: cells
# and panels the config has no runs for say "not in <label>".
from fpt.analysis.attention import attention_path
import yaml


localrules:
    attention,
    config_snapshot,


for _name, _target in TARGETS.items():

    rule:
        name:
            _name
        input:
            metrics=list(target_metrics(_target).values()),
            extra=[f"{RESULTS}/{p}" for p in _target.extra_inputs(GRID)],
            code=_target.code(),
        output:
            **target_outputs(_target),
        log:
            f"{RESULTS}/logs/targets/{_name}.log",
        localrule: True
        params:
            name=_name,
            caption=_target.caption,
            experiments=list(target_metrics(_target)),
        run:
            fpt_ws.build_target(
                params.name, params.experiments, input, output, log[0], config
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
    conda:
        "../envs/fpt.yaml"
    threads: 1
    params:
        run_dir=lambda w: f"{RESULTS}/runs/{w.run}",
        init_from=lambda w: init_from(w.run),
        examples=config["analysis"]["attention_examples"],
        weights_dir=WEIGHTS,
        data_dir=DATA,
    shell:
        "python -m fpt attention --run-dir {params.run_dir} --out {output} --threads {threads} "
        "--weights-dir {params.weights_dir} --data-dir {params.data_dir} {params.init_from} "
        "--examples {params.examples} > {log} 2>&1"


rule config_snapshot:
    """The validated config (defaults filled) beside the tables, and in the report."""
    output:
        report(
            f"{FIGURES}/config.yaml", caption="../report/config.rst", category="config"
        ),
    log:
        f"{RESULTS}/logs/config_snapshot.log",
    params:
        text=lambda w: yaml.safe_dump(dict(config), sort_keys=False),
    run:
        fpt_ws.write_text(params.text, output[0], log[0])
