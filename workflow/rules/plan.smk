# The grid's cost before it starts (docs/operations.md): `fpt plan`'s table
# for this config as RESULTS/plan.tsv and RESULTS/plan.md, printed too. On demand
# (`snakemake plan`), not part of `all`; it trains nothing and reads no data or weights.
import json


localrules:
    plan,


rule plan:
    """Per experiment and for the whole grid: runs, training and evaluation FLOPs, time on
    this CPU and on the config's estimate.gpu (lone runs and fused packs), memory per run
    (the model: fpt/plan/)."""
    output:
        tsv=f"{RESULTS}/plan.tsv",
        md=f"{RESULTS}/plan.md",
    log:
        f"{RESULTS}/logs/plan.log",
    params:
        # the config as the plan reads it: an edited config replans (rerun trigger params)
        config=lambda w: json.dumps(dict(config), sort_keys=True, default=str),
    run:
        fpt_ws.write_plan(config, output.tsv, output.md, log[0])
