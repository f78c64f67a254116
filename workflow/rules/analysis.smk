# One rule per table and figure (fpt/analysis/targets.py). Each reads only its experiment's
# metrics and lists its own source module as an input: editing a plotting function reruns
# that plot (mtime trigger) and never training.
from fpt.analysis import targets as fpt_targets


for _name, _target in ACTIVE_TARGETS.items():

    rule:
        name:
            _name
        input:
            metrics=f"{RESULTS}/experiments/{_target.experiment}/metrics.parquet",
            code=_target.module,
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
        localrule: True
        run:
            fpt_targets.build(params.name, input.metrics, {k: Path(v) for k, v in output.items()})
