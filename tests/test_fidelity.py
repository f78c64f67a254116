"""The paper's setup by default, every deviation a named setting (issue: faithful numbers).

Pooling of unlike runs, the random-init scheme, precision, ViT dropout, collapse, the
noise-aware convergence criterion and captions; the task-side points (val_size 0, readout,
parameter counts) are in tests/test_fidelity_tasks.py and tests/test_describe.py, the
reference LSTM in tests/test_lstm_reference.py."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import transformers

from fpt import precision
from fpt.analysis import paper, targets
from fpt.analysis.stats import collapse_step, final_rows, steps_to_converge
from fpt.grid import ConfigError, validate_config
from fpt.metrics import SCHEMA_VERSION, read_run, to_table, write_atomic
from fpt.models.build import build_backbone
from fpt.spec import RunSpec
from fpt.train import train
from tests.conftest import REPO
from tests.synthetic import metric_rows


def _run(accs, *, run_suffix: str = "", steps: int = 100, experiment_settings="x", **axes):
    rows = metric_rows(accs, **axes)
    for r in rows:
        r["run"] += run_suffix
        r["settings"] = experiment_settings
        r["steps"] = steps
    return rows


def _write(path: Path, *runs) -> Path:
    write_atomic(to_table([r for run in runs for r in run]), path)
    return path


def _table(tmp_path: Path, name: str, experiments: dict[str, list]) -> dict[str, Path]:
    paths = {e: _write(tmp_path / f"{e}.parquet", *runs) for e, runs in experiments.items()}
    out = targets.TARGETS[name].outputs(tmp_path / "figs")
    targets.build(name, paths, out, label="demo")
    return out


def _md_rows(out: dict[str, Path]) -> dict[str, list[str]]:
    lines = [ln for ln in out["md"].read_text().splitlines() if ln.startswith("| ")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    return {r[0]: r for r in rows}


# ---------------------------------------------------------------- 1. no pooled unlike runs


def test_a_cell_takes_its_primary_experiments_runs_and_never_pools_other_settings(tmp_path):
    """The demo's situation: table2 reads modality, table1, init. Bit XOR's pretrained MiniLM
    seed 0 ran 300 steps in table1/modality and 100 steps in init: two runs, one seed."""
    long = dict(task="bit_xor", backbone="minilm", size="l6", init="pretrained", seed=0)
    primary = _run([0.5, 1.0], run_suffix="/settings=aaaaaaaa", steps=300, **long)
    other = _run([0.5, 0.71], run_suffix="/settings=bbbbbbbb", steps=100, **long)
    out = _table(tmp_path, "table2_modality", {"modality": [primary], "init": [other]})
    row = _md_rows(out)["Language (minilm l6)"]
    # Bit XOR (ours) is the 3rd column: the 300-step run alone, one seed
    assert row[3] == "100.0 (n=1)"
    csv = pd.read_csv(out["csv"])
    cell = csv[(csv["row"] == "Language") & (csv["task"] == "bit_xor")].iloc[0]
    assert cell["accuracy_mean"] == 1.0 and cell["n"] == 1
    assert "the first listed supplies it" in out["md"].read_text()


def test_runs_of_two_settings_in_one_experiment_are_separate_rows_with_their_seeds(tmp_path):
    base = dict(task="bit_xor", backbone="gpt2", size="small", init="pretrained")
    runs = [
        _run([0.5, 1.0], lr=1e-3, seed=0, **base),
        _run([0.5, 0.9], lr=1e-3, seed=1, **base),
        _run([0.5, 0.6], lr=3e-4, seed=0, **base),
    ]
    out = _table(tmp_path, "table1_fpt_vs_full", {"table1": runs})
    rows = _md_rows(out)
    assert rows["FPT (gpt2 small)"][3] == "varies: rows below"
    assert rows["FPT (gpt2 small) [lr 0.001]"][3].startswith("95.0 ± ")
    assert rows["FPT (gpt2 small) [lr 0.001]"][3].endswith("(n=2)")
    assert rows["FPT (gpt2 small) [lr 0.0003]"][3] == "60.0 (n=1)"
    csv = pd.read_csv(out["csv"])
    fpt = csv[(csv["row"] == "FPT") & (csv["task"] == "bit_xor")].set_index("variant")
    assert fpt.loc["lr 0.001", "n"] == 2 and fpt.loc["lr 0.0003", "n"] == 1


# ---------------------------------------------------------------- 2. random init


def _std(t: torch.Tensor) -> float:
    return t.detach().float().std().item()


def test_paper_random_init_draws_every_gpt2_weight_from_n_0_002():
    torch.manual_seed(0)
    bb = build_backbone("gpt2", "small", "random", random_init="paper")
    m = bb.model
    for blk in m.h:
        for lin in (blk.attn.c_attn, blk.attn.c_proj, blk.mlp.c_fc, blk.mlp.c_proj):
            assert abs(_std(lin.weight) - 0.02) < 0.0006, lin
            assert lin.bias.abs().max().item() == 0
        assert torch.equal(blk.ln_1.weight, torch.ones_like(blk.ln_1.weight))
        assert blk.ln_1.bias.abs().max().item() == 0
    assert abs(_std(m.wpe.weight) - 0.02) < 0.0006
    assert abs(_std(m.wte.weight) - 0.02) < 0.0006


@pytest.mark.skipif(
    not transformers.__version__.startswith("5.24"), reason="the residual scaling is per version"
)
def test_library_init_of_this_transformers_scales_the_residual_projections():
    torch.manual_seed(0)
    m = build_backbone("gpt2", "small", "random", random_init="library").model
    assert abs(_std(m.h[0].attn.c_proj.weight) - 0.02 / (2 * 12) ** 0.5) < 0.0003


def test_random_init_is_part_of_a_random_runs_identity_only():
    random = RunSpec("bit_xor", "gpt2", "small", init="random")
    assert random.settings()["random_init"] == "paper"
    library = RunSpec("bit_xor", "gpt2", "small", init="random", random_init="library")
    assert library.settings()["random_init"] == "library" and library.path != random.path
    pretrained = RunSpec("bit_xor", "gpt2", "small", random_init="library")
    assert "random_init" not in pretrained.settings()
    assert pretrained == RunSpec("bit_xor", "gpt2", "small")  # normalised: it does not apply


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> pd.DataFrame:
    spec = RunSpec("bit_xor", "gpt2", "tiny", init="random", steps=4, eval_every=2, batch_size=4,
                   micro_batch_size=4, options={"val_size": 16, "test_size": 32})  # fmt: skip
    out = tmp_path_factory.mktemp("run")
    return read_run(train(spec, out, device="cpu", threads=1, handle_signals=False))


def test_every_metrics_row_records_the_fidelity_settings_and_versions(tiny_run):
    df = tiny_run
    assert set(df["random_init"]) == {"paper"}
    assert set(df["transformers_version"]) == {transformers.__version__}
    assert set(df["precision"]) == {"fp32"}
    assert df["device_name"].str.len().min() > 0
    assert df["lstm_cell"].isna().all()  # a transformer: the LSTM cell does not apply
    assert set(df["schema_version"]) == {SCHEMA_VERSION}
    test = df[df["split"] == "test"]
    assert set(test["eval_examples"]) == {32}
    assert ((test["chance"] >= 0.5) & (test["chance"] < 0.6)).all()  # balanced bits


# ---------------------------------------------------------------- 3. precision


def test_precision_modes():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="tf32 is a CUDA"):
        precision.configure("tf32", cpu)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.configure("bf16", cpu)():
        assert (a @ b).dtype == torch.bfloat16
    with precision.configure("fp32", cpu)():
        assert (a @ b).dtype == torch.float32
    fp32, bf16 = (RunSpec("bit_xor", "gpt2", "tiny", precision=p) for p in ("fp32", "bf16"))
    assert fp32.path != bf16.path and "--precision" in bf16.cli_args()


# A fresh process (precision switches are process-wide): import what trains, configure every
# mode for a CUDA device (the switches need no GPU) with every warning an error.
PRECISION_FLAGS = """
import warnings
warnings.simplefilter("error")
import torch
import fpt.train, fpt.fused
from fpt import precision
cuda = torch.device("cuda")
for mode, want in (("tf32", "tf32"), ("fp32", "ieee"), ("bf16", "ieee")):
    precision.configure(mode, cuda)
    got = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
           torch.backends.cudnn.rnn.fp32_precision)
    assert got == (want,) * 3, (mode, got)
print("ok")
"""


def test_precision_switches_use_the_new_torch_api_without_a_warning():
    """torch >= 2.9 deprecates the `allow_tf32` flags and raises when they are mixed with
    `fp32_precision`: fpt sets only the latter, and nothing it imports warns."""
    out = subprocess.run(
        [sys.executable, "-c", PRECISION_FLAGS], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_bf16_run_records_bf16(tmp_path):
    spec = RunSpec("bit_xor", "gpt2", "tiny", init="random", steps=2, eval_every=2, batch_size=4,
                   micro_batch_size=4, precision="bf16", options={"val_size": 8, "test_size": 8})  # fmt: skip
    df = read_run(train(spec, tmp_path, device="cpu", threads=1, handle_signals=False))
    assert set(df["precision"]) == {"bf16"}


# ---------------------------------------------------------------- 4. ViT dropout


def test_vit_dropout_follows_the_reference_by_default(tmp_path):
    torch.manual_seed(0)
    bb = build_backbone("vit", "tiny", "random")
    assert bb.model.config.hidden_dropout_prob == 0.1
    assert bb.model.config.attention_probs_dropout_prob == 0.1
    assert bb.pos_drop.p == 0.1
    off = build_backbone("vit", "tiny", "random", backbone_dropout=0.0)
    assert off.model.config.hidden_dropout_prob == 0.0 and off.pos_drop.p == 0.0
    # pretrained weights whose own config says 0.0 (as google/vit-base-patch16-224's does)
    off.model.save_pretrained(tmp_path / "vit-tiny")
    loaded = build_backbone("vit", "tiny", "pretrained", weights_dir=tmp_path)
    assert loaded.model.config.hidden_dropout_prob == 0.1 and loaded.pos_drop.p == 0.1
    # the setting is part of a run's identity
    assert (
        RunSpec("cifar10", "vit", "base").path
        != RunSpec("cifar10", "vit", "base", backbone_dropout=0.0).path
    )


# ---------------------------------------------------------------- 9. collapse


def test_collapse_rule():
    steps = [0, 10, 20, 30, 40, 50]
    # learned to 90%, then two evaluations at chance (50%): collapsed, value before = step 30
    assert collapse_step(steps, [0.5, 0.8, 0.9, 0.88, 0.5, 0.51], 0.5, 1000) == 30
    # one final dip is not "stays there"; a dip that recovers is not a collapse
    assert collapse_step(steps, [0.5, 0.8, 0.9, 0.88, 0.9, 0.5], 0.5, 1000) is None
    assert collapse_step(steps, [0.5, 0.8, 0.5, 0.5, 0.9, 0.9], 0.5, 1000) is None
    # never learned: at chance throughout
    assert collapse_step(steps, [0.5, 0.51, 0.5, 0.52, 0.5, 0.5], 0.5, 1000) is None
    # the band widens with the noise of a small test set: 3 sd of 50% on 100 = 15 points
    assert collapse_step(steps, [0.5, 0.6, 0.62, 0.6, 0.6, 0.6], 0.5, 100) is None
    assert collapse_step(steps, [0.5, 0.6, 0.62, 0.6, 0.6, 0.6], 0.5, 10_000) is None
    assert collapse_step(steps, [0.5, 0.9, 0.95, 0.9, 0.6, 0.6], 0.5, 100) == 30
    # unknown chance (metrics written before schema 3): no verdict
    assert collapse_step(steps, [0.5, 0.8, 0.9, 0.88, 0.5, 0.51], None, None) is None


def test_a_collapsed_run_is_reported_before_its_collapse_and_marked(tmp_path):
    rows = _run([0.1, 0.6, 0.9, 0.95, 0.11, 0.1], task="mnist")
    for r in rows:
        r["chance"], r["eval_examples"] = 0.1135, 10_000
    fin = final_rows(pd.DataFrame(rows))
    assert fin["collapsed"].tolist() == [True] and fin["accuracy"].tolist() == [0.95]
    out = _table(tmp_path, "table1_fpt_vs_full", {"table1": [rows]})
    assert _md_rows(out)["FPT (gpt2 small)"][7] == "95.0 (n=1) ‡"


# ---------------------------------------------------------------- 10. noise-aware convergence


def test_convergence_tolerance_widens_to_the_test_sets_binomial_noise():
    steps = [0, 100, 200, 300, 400]
    acc = [0.10, 0.365, 0.37, 0.385, 0.372]  # ListOps-like: wobbles by ~1.5 points at the top
    assert steps_to_converge(steps, acc, 0.01) == 300  # inside the noise, 1 point is too tight
    # 2,000 test examples: sd of 38.5% is 1.09 points; 2 sd = 2.2 points
    assert steps_to_converge(steps, acc, 0.01, examples=2000, z=2.0) == 100
    assert steps_to_converge(steps, acc, 0.01, examples=2000, z=0.0) == 300


def test_table4_uses_the_noise_aware_criterion(tmp_path):
    def run(init, accs, seed=0):
        rows = _run(accs, task="listops", init=init, seed=seed, every=100)
        for r in rows:
            r["eval_examples"], r["chance"] = 2000, 0.17
        return rows

    fpt = run("pretrained", [0.10, 0.365, 0.37, 0.385, 0.372])
    rnd = run("random", [0.10, 0.2, 0.3, 0.34, 0.343])
    out = _table(tmp_path, "table4_compute_efficiency", {"table1": [fpt, rnd]})
    row = _md_rows(out)["ListOps"]
    assert row[2] == "100 (n=1)"  # FPT steps: converged at step 100 within 2 sd
    assert "binomial" in out["md"].read_text()


# ---------------------------------------------------------------- 11. captions


def test_table1_names_where_each_unlike_paper_number_comes_from(tmp_path):
    out = _table(tmp_path, "table1_fpt_vs_full", {"table1": [_run([0.5, 1.0])]})
    rows, text = _md_rows(out), out["md"].read_text()
    full = rows["Full Transformer"]
    assert "38 (LRA)" in full and "42 (LRA)" in full and "9 (TAPE)" in full
    assert "70.3 (3 layers)" in full
    assert "72.1 (GPT-2 large)" in rows["FPT (gpt2 small)"]
    assert "Long Range Arena" in text and "TAPE" in text and "3-layer" in text
    assert (
        paper.SOURCES_NOTE
        in _table(tmp_path / "t3", "table3_transformer_vs_lstm", {})["md"].read_text()
    )


# ---------------------------------------------------------------- config and schema


def test_a_swept_experiment_needs_a_val_split():
    config = {
        "experiments": {
            "s": {
                "protocol": "swept",
                "settings": {"options": {"val_size": 0}},
                "grid": {"task": ["digits"], "backbone": ["gpt2"], "size": ["tiny"]},
            }
        }
    }
    with pytest.raises(ConfigError, match="val_size"):
        validate_config(config)


def test_version_2_metrics_are_read_as_what_fpt_did_then(tmp_path):
    rows = _run([0.5, 1.0], init="random") + _run([0.5, 0.9], backbone="vit", size="base")
    df = pd.DataFrame(rows).drop(
        columns=[
            "precision",
            "random_init",
            "backbone_dropout",
            "lstm_cell",
            "device_name",
            "reachable_params",
            "eval_examples",
            "chance",
        ]  # fmt: skip
    )
    df["schema_version"] = 2
    df["device"] = ["cuda:0"] * 2 + ["cpu"] * 2
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "v2.parquet")
    got = read_run(tmp_path / "v2.parquet")
    assert got["precision"].tolist() == ["bf16", "bf16", "fp32", "fp32"]
    assert got["random_init"].tolist()[:2] == ["library", "library"]
    assert got["random_init"].isna().tolist()[2:] == [True, True]  # pretrained ViT
    assert got["backbone_dropout"].tolist()[2:] == [0.0, 0.0]
    assert set(got["schema_version"]) == {SCHEMA_VERSION}


def test_a_seed_that_would_replay_the_eval_sets_is_refused(tmp_path):
    """The bit tasks draw val/test from data_seed + 1 / + 2 (1235 / 1236 by default) and a
    run's training batches from its seed: those seeds would train on the test examples."""
    config = {"experiments": {"e": {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"],
                                             "size": ["tiny"], "seed": [1236]}}}}  # fmt: skip
    with pytest.raises(ConfigError, match="seed 1236 would train bit_xor on its own val/test"):
        validate_config(config)
    config["experiments"]["e"]["settings"] = {"options": {"data_seed": 7}}
    validate_config(config)  # another data_seed frees it
    with pytest.raises(ValueError, match="its own val/test examples"):
        train(RunSpec("bit_memory", "gpt2", "tiny", seed=1235), tmp_path, device="cpu")
    # a data task holds its splits out by index, not by a seeded draw: any seed is fine
    config["experiments"]["e"] = {"grid": {"task": ["digits"], "backbone": ["gpt2"],
                                           "size": ["tiny"], "seed": [1235]}}  # fmt: skip
    validate_config(config)
