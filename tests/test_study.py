"""The study report (fpt/analysis/study.py, docs/study.md), on behaviour:

- the verdict rules on hand-made intervals; cells read from a table's CSV as it prints them;
- a user's own study (other folders, threads, pack size, label, fewer tasks): synthetic runs
  with hand-set accuracies, rendered by the real table modules, snapshotted and rendered by
  the command line; every claim gets the verdict those numbers imply;
- docs/study.md is what its committed copies render to.
Fast: no training, no Snakemake (the study itself is run by hand: README, "The CPU study").
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fpt import grid as fpt_grid
from fpt import protocol
from fpt.analysis import study, targets
from fpt.analysis.render import fmt_duration
from fpt.metrics import COLUMNS, SCHEMA_VERSION, to_table, write_atomic
from tests.conftest import REPO

CLAIMS = REPO / "docs" / "study_claims.yaml"
DOC = REPO / "docs" / "study.md"
H, F, INC, P = study.HOLDS, study.FAILS, study.INCONCLUSIVE, study.PARTLY


def test_fmt_duration_exact_for_measured_times_rounded_for_estimates():
    assert fmt_duration(3922, exact=True) == "1 h 5 min 22 s"
    assert fmt_duration(180, exact=True) == "3 min 0 s"
    assert fmt_duration(42.4, exact=True) == "42 s"
    rounded = [fmt_duration(s) for s in (45, 720, 3.5 * 3600, 30 * 3600, 3.2 * 86400)]
    assert rounded == ["45 s", "12 min", "3.5 h", "30.0 h", "3.2 d"]


# ---- verdict rules and cells -----------------------------------------------------------------


def est(mean: float, half: float | None, n: int = 3) -> study.Estimate:
    return study.Estimate(f"{mean}", mean, half, n)


def test_verdict_rules():
    v = study.verdict
    assert v("above", est(90, 1), est(80, 2))[0] == H
    assert v("above", est(70, 1), est(80, 2))[0] == F
    assert v("above", est(81, 1), est(80, 2))[0] == INC
    assert v("above", est(90, None, 1), est(80, 2))[0] == INC  # one seed: no interval
    # at_least: overlap counts as "the same" only when both intervals are narrow
    assert v("at_least", est(81, 1), est(80, 2), match_width=5)[0] == H
    assert v("at_least", est(81, 9), est(80, 2), match_width=5)[0] == INC
    assert v("at_least", est(60, 9), est(80, 2), match_width=5)[0] == F
    # fewer_steps: a random run that never reached the pretrained accuracy loses on accuracy,
    # whatever its (early, flat) steps to converge; equal accuracies: the steps decide
    hi, lo, same = est(100, 0), est(50.2, 0.4), est(99, 2)
    fast, slow = est(50, 10), est(300, 20)
    assert v("fewer_steps", slow, fast, hi, lo)[0] == H
    assert v("fewer_steps", fast, slow, lo, hi)[0] == F
    assert v("fewer_steps", fast, slow, same, same)[0] == H
    assert v("fewer_steps", slow, fast, same, same)[0] == F
    assert study.overall([H, H]) == H and study.overall([H, F]) == P
    assert study.overall([F, INC]) == F and study.overall([INC]) == INC


def test_cells_read_from_a_csv_as_the_table_prints_them(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame(
        [
            {"row": "FPT", "backbone": "minilm", "size": "l6", "task": "bit_xor",
             "accuracy_mean": 0.767, "ci95": 0.012, "n": 3, "diverged": 1, "variant": ""},
            {"row": "FPT", "backbone": "minilm", "size": "l6", "task": "bit_xor",
             "accuracy_mean": 0.5, "ci95": 0.1, "n": 3, "diverged": 0, "variant": "lr 0.0001"},
            {"row": "FPT", "backbone": "gpt2", "size": "small", "task": "bit_xor",
             "accuracy_mean": 0.9, "ci95": None, "n": 1, "diverged": 0, "variant": ""},
            {"row": "Frozen random", "backbone": None, "size": None, "task": "bit_xor",
             "accuracy_mean": None, "ci95": None, "n": 0, "diverged": 0, "variant": ""},
        ]
    ).to_csv(path, index=False)  # fmt: skip
    t = study.CsvTable.read(path)
    model = {"backbone": "minilm", "size": "l6"}
    e = t.estimate({"row": "FPT", "task": "bit_xor"}, model, "not in mine")
    assert e.text == "76.7 ± 1.2 (n=3) †" and e.interval == pytest.approx((75.5, 77.9))
    other = t.estimate({"row": "FPT", "task": "bit_xor"}, {"backbone": "gpt2"}, "-")
    assert other.text == "90.0 (n=1)" and other.interval is None
    for row in ("Frozen random", "Full Transformer"):  # no runs; no such row
        none = t.estimate({"row": row, "task": "bit_xor"}, model, "not in mine")
        assert none == study.Estimate("not in mine") and none.interval is None
    with pytest.raises(study.StudyError, match="no column depth"):
        t.estimate({"row": "FPT", "depth": 6}, model, "-")
    with pytest.raises(study.StudyError, match="2 rows"):
        t.estimate({"row": "FPT", "task": "bit_xor"}, {}, "-")
    with pytest.raises(study.StudyError, match="measure"):
        t.estimate({"row": "FPT", "measure": "speed"}, model, "-")


# ---- a user's own study, end to end ----------------------------------------------------------

KEEP = ["bit_xor", "digits"]  # the user's study runs two of the four tasks
OUTPUT_ONLY = {"1": 0.50, "3": 0.60, "6": 0.70, "all": 0.70}  # pretrained, by depth


def _top(spec) -> float:
    """The hand-set final accuracy of a run's cell (its seeds add -0.5, 0, +0.5 points)."""
    pre = spec.init == "pretrained"
    if spec.trainable == "full":
        return 0.95 if spec.lr < 1e-3 else 0.89  # fully trained: better at the lower lr
    if spec.init == "stats":
        return 0.70
    if spec.trainable == "output_only":
        return OUTPUT_ONLY[str(spec.depth)] if pre else 0.55
    table = {"output_ln": (0.80, 0.55), "output_ln_in": (0.85, 0.57), "in_out": (0.95, 0.60)}
    return table.get(spec.trainable, (0.90, 0.60))[0 if pre else 1]  # fpt: 0.90 / 0.60


def _rows(spec) -> list[dict]:
    top = _top(spec) + 0.005 * (spec.seed - 1)
    rows = []
    for step in range(0, spec.steps + 1, spec.eval_every):
        acc = round(0.1 + (top - 0.1) * min(1.0, 2.5 * step / spec.steps), 4)
        for split in ("test", "val") if spec.options.get("val_size", 1) != 0 else ("test",):
            rows.append({c: None for c in COLUMNS} | {
                "task": spec.task, "backbone": spec.backbone, "size": spec.size,
                "init": spec.init, "trainable": spec.trainable, "depth": str(spec.depth),
                "input_init": spec.input_init, "lr": spec.lr, "seed": spec.seed,
                "settings": spec.settings_hash(), "run": spec.path, "step": step,
                "samples": step * spec.batch_size, "wall_s": 1.0, "split": split,
                "loss": 1.0 - acc, "accuracy": acc, "diverged": False, "stop_step": spec.steps,
                "trainable_params": 1000, "total_params": 22_000_000, "steps": spec.steps,
                "batch_size": spec.batch_size, "patience": spec.patience,
                "precision": spec.precision, "random_init": spec.random_init,
                "lstm_cell": spec.lstm_cell, "device": "cpu", "device_name": "Test CPU",
                "torch_version": "2.13.0+cpu", "transformers_version": "5.24.0",
                "python_version": "3.11.7", "git_rev": "abc123def456",
                "schema_version": SCHEMA_VERSION,
            })  # fmt: skip
    return rows


def _user_config(root: Path) -> Path:
    """study.yaml as a user might change it: its own folders, label, threads, pack size and
    two of the tasks."""
    cfg = yaml.safe_load((REPO / "study.yaml").read_text())
    cfg |= {"label": "mystudy", "train_threads": 2, "pack_size": 2}
    cfg |= {"results_dir": str(root / "out" / "res"), "figures_dir": str(root / "out" / "figs")}
    cfg["tasks"] = {t: s for t, s in cfg["tasks"].items() if t in KEEP}
    for exp in cfg["experiments"].values():
        exp["grid"] = [g | {"task": [t for t in g["task"] if t in KEEP]} for g in exp["grid"]]
    path = root / "mystudy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _fake_run(config: dict, grid) -> None:
    """What the study leaves behind, in seconds: every run's metrics, the swept experiment's
    selection, the cited tables rendered by their real modules, the config snapshot and the
    training jobs' benchmarks."""
    results, figures = Path(config["results_dir"]), Path(config["figures_dir"])
    per_run = {path: _rows(spec) for path, spec in grid.runs.items()}
    paths = {}
    for exp, runs in grid.experiments.items():
        paths[exp] = results / "experiments" / exp / "metrics.parquet"
        write_atomic(to_table([r for run in runs for r in per_run[run]]), paths[exp])
    all_rows = [r for rows in per_run.values() for r in rows]
    write_atomic(to_table(all_rows), results / "metrics.parquet")
    for exp, configs in grid.selections.items():
        files = []
        for i, (cfg, runs) in enumerate(sorted(configs.items())):
            rows = pd.DataFrame([r for run in runs for r in per_run[run]])
            files.append(results / "sel" / exp / f"{i}.parquet")
            protocol._write(protocol.select(rows, exp, cfg), files[-1])
        protocol.write_selected(files, results / protocol.selected_path(exp))
    for name in study.load_claims(CLAIMS).tables:
        t = targets.TARGETS[name]
        metrics = {e: paths[e] for e in t.experiments if e in paths}
        extra = [results / p for p in t.extra_inputs(grid)]
        targets.build(name, metrics, t.outputs(figures), extra, config["label"])
    (figures / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    bench = results / "benchmarks" / "train"
    bench.mkdir(parents=True)
    for i in range(3):
        (bench / f"job{i}.tsv").write_text(f"s\th:m:s\n{10.0 * (i + 1)}\t0:00:10\n")
    pd.DataFrame({"run": ["a", "b"], "s": [100.0, 200.0]}).to_csv(
        results / "benchmarks" / "train.tsv", sep="\t", index=False
    )


def _unread_columns(figures: Path) -> dict[str, set[str]]:
    """Per cited table, the columns its claims read that the table's CSV lacks."""
    claims, out = study.load_claims(CLAIMS), {}
    for c in claims.claims:
        header = set(pd.read_csv(figures / f"{c['table']}.csv", nrows=0).columns)
        for comp in c["comparisons"]:
            for side in study.SIDES:
                if side in comp:
                    address = {k: v for k, v in comp[side].items() if k != "measure"}
                    mean, ci, n, *_ = study.MEASURES[comp[side].get("measure", "accuracy")]
                    need = {*address, mean, ci, n} - header
                    if need:
                        out.setdefault(c["table"], set()).update(need)
    return out


@pytest.fixture(scope="module")
def user_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    cfg_path = _user_config(root)
    config = fpt_grid.load_config(cfg_path)
    grid = fpt_grid.expand(config)
    _fake_run(config, grid)
    reports = root / "reports"
    reports.mkdir()
    claims = yaml.safe_load(CLAIMS.read_text())
    # a table whose CSV lacks what its claims read fails the test below; the claims file is
    # otherwise the study's own
    lacking = _unread_columns(Path(config["figures_dir"]))
    claims["claims"] = [c for c in claims["claims"] if c["table"] not in lacking]
    (reports / "mine_claims.yaml").write_text(yaml.safe_dump(claims, sort_keys=False))
    doc = reports / "mine.md"
    argv = ["--configfile", str(cfg_path), "--out", str(doc), "--wall-seconds", "3922"]
    assert study.main(argv) == 0
    return {"doc": doc, "config": config, "grid": grid, "lacking": lacking}


def test_cited_tables_write_the_columns_their_claims_read(user_study):
    lacking = user_study["lacking"]
    assert lacking == {}


EXPECTED = {  # from the hand-set accuracies in _top; the user's study has no ListOps or Bit Memory
    "pretrained_beats_random": P,  # bit_xor, digits hold; bit_memory, listops: no runs
    "fpt_matches_full": P,  # 90 vs 89 (lr 1e-3), both narrow; two tasks without runs
    "compute_efficiency": P,  # accuracy 90 vs 60 decides; two tasks without runs
    "ladder_layer_norms": P,  # pretrained 80 vs 70 holds; random 55 vs 55 overlaps
    "ladder_pretrained_vs_random": H,
    "layer_norms_trained": F,  # pretrained: frozen 95 beats trained 90
    "pretrained_beats_statistics": H,
    "statistics_beat_random": H,
    "depth_helps_pretrained": P,  # digits 70 vs 50; ListOps not run
    "depth_pretrained_vs_random": P,
    "sweep_helps_full_training": H,  # 95 (lr 1e-4, chosen on val) vs 89
    "swept_full_beats_frozen": H,  # 95 vs 90
    "swept_pretrained_beats_random": H,
}


def test_a_users_study_gets_the_verdicts_its_numbers_imply(user_study):
    doc, config = user_study["doc"], user_study["config"]
    text = doc.read_text()
    claims = study.load_claims(doc.parent / "mine_claims.yaml")
    assert {c["id"] for c in claims.claims} == set(EXPECTED) - {
        c["id"] for c in study.load_claims(CLAIMS).claims if c["table"] in user_study["lacking"]
    }
    for c in claims.claims:
        assert f"| `{c['table']}` | {EXPECTED[c['id']]} |" in text, c["id"]
        assert f"**Verdict: {EXPECTED[c['id']]}**" in text
    assert "- Bit XOR: A 90.0 ± 1.2 (n=3) vs B 60.0 ± 1.2 (n=3): **holds** (A above B)." in text
    assert "- ListOps: A not in mystudy vs B not in mystudy: **inconclusive" in text
    # the run's facts: the user's config, threads, packs, folders and the runs' commit
    packs = len(user_study["grid"].packs)
    assert packs and f"({packs} fused packs of up to 2 runs)" in text
    assert "2 threads per job" in text and "**1 h 5 min 22 s**" in text
    assert "fpt at commit abc123def456." in text and "Test CPU" in text
    assert f"`{config['figures_dir']}/table1_fpt_vs_full.md`" in text
    assert "[`mine/table1_fpt_vs_full.csv`](mine/table1_fpt_vs_full.csv)" in text
    copies = sorted(p.name for p in (doc.parent / "mine").iterdir())
    assert copies == sorted([*(f"{t}.csv" for t in claims.tables), "config.yaml", "run.json"])
    assert study.check(doc) is None


def test_check_fails_on_a_hand_edit_or_a_changed_copy_and_names_what_is_missing(
    user_study, tmp_path, capsys
):
    work = tmp_path / "reports"
    shutil.copytree(user_study["doc"].parent, work)
    doc = work / "mine.md"
    assert study.main(["--check", str(doc)]) == 0
    doc.write_text(doc.read_text().replace("## Summary", "## Summary\n\nBetter than it looks."))
    assert study.main(["--check", str(doc)]) == 1
    assert study.main(["--out", str(doc)]) == 0  # regenerated from the copies alone
    assert study.main(["--check", str(doc)]) == 0
    copy = work / "mine" / "table1_fpt_vs_full.csv"
    copy.write_text(copy.read_text().replace("0.9", "0.1"))
    assert study.check(doc) is not None
    (work / "mine" / "run.json").unlink()
    assert study.main(["--check", str(doc)]) == 2
    assert "run.json" in capsys.readouterr().err


# ---- the committed report ----------------------------------------------------------------


def test_committed_report_is_what_its_committed_copies_render_to():
    assert study.check(DOC) is None, "regenerate: python -m fpt.analysis.study --out docs/study.md"
