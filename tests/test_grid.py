import pytest
import yaml

from fpt import grid
from fpt.schema import SCHEMA_PATH
from fpt.spec import RunSpec
from tests.conftest import REPO


def test_paper_config_expands_to_the_planned_runs():
    g = grid.expand(grid.load_config(REPO / "config.yaml"))
    # table1: 7 tasks x (pretrained fpt + random full + random fpt) x 3 seeds
    assert len(g.experiments["table1"]) == 63
    assert set(g.experiments["table1"]) <= set(g.runs)
    specs = g.specs("table1")
    assert {s.backbone for s in specs} == {"gpt2"} and {s.size for s in specs} == {"small"}
    assert {(s.task, s.steps) for s in specs} == {
        ("bit_memory", 50000),
        ("bit_xor", 20000),
        ("listops", 10000),
        ("mnist", 30000),
        ("cifar10", 400000),
        ("cifar10_lra", 600000),
        ("homology", 100000),
    }
    assert {s.lr for s in specs if s.task == "homology"} == {1e-4}
    assert {s.lr for s in specs if s.task != "homology"} == {1e-3}


def test_settings_merge_most_specific_last():
    config = {
        "defaults": {"steps": 10, "lr": 0.1, "options": {"test_size": 5}},
        "tasks": {"bit_xor": {"steps": 20, "options": {"val_size": 7}}},
        "experiments": {
            "e": {
                "settings": {"steps": 30},
                "grid": {"task": ["bit_xor"], "backbone": ["gpt2"], "lr": [0.01]},
            }
        },
    }
    (spec,) = grid.expand(grid.validate_config(config)).specs("e")
    assert (spec.steps, spec.lr, spec.size) == (30, 0.01, "small")
    assert spec.options == {"test_size": 5, "val_size": 7}


def test_identical_runs_from_two_experiments_are_one_run():
    point = {"task": ["bit_xor"], "backbone": ["gpt2"], "seed": [0, 1]}
    config = grid.validate_config(
        {"experiments": {"a": {"grid": point}, "b": {"grid": [point, {**point, "seed": [2]}]}}}
    )
    g = grid.expand(config)
    assert len(g.experiments["a"]) == 2 and len(g.experiments["b"]) == 3
    assert len(g.runs) == 3


def test_run_paths_are_hive_style_and_change_with_any_setting():
    spec = RunSpec(task="bit_xor", backbone="gpt2", size="small", lr=1e-4, seed=2)
    parts = spec.path.split("/")
    assert parts[:9] == [
        "task=bit_xor",
        "backbone=gpt2",
        "size=small",
        "init=pretrained",
        "trainable=fpt",
        "depth=all",
        "input_init=orthogonal",
        "lr=0.0001",
        "seed=2",
    ]
    assert parts[9].startswith("settings=")
    other = RunSpec(
        task="bit_xor", backbone="gpt2", size="small", lr=1e-4, seed=2, steps=spec.steps + 1
    )
    assert other.path != spec.path


@pytest.mark.parametrize(
    "spec",
    [
        RunSpec("bit_memory", "minilm", "l6", depth=3, lr=3e-4, options={"n_bits": 20, "patch": 5}),
        RunSpec(
            "cifar10", "vit", "base", init="random", random_init="library", backbone_dropout=0.0
        ),
        RunSpec("bit_xor", "lstm", "small", lstm_cell="fused", precision="bf16", patience=3),
    ],
    ids=["options", "random-init-dropout", "lstm-precision-patience"],
)
def test_cli_args_rebuild_the_spec(spec):
    import argparse

    from fpt.cli_args import add_model_args, spec_from_args

    p = argparse.ArgumentParser()
    add_model_args(p)
    args = p.parse_args(spec.cli_args())
    assert spec_from_args(args) == spec


@pytest.mark.parametrize("name", ["demo.yaml", ".test/config.yaml"])
def test_small_configs_are_valid(name):
    config = grid.load_config(REPO / name)
    g = grid.expand(config)
    assert "table1" in g.experiments and g.runs


def test_schema_enums_match_the_registries():
    from fpt.models import FAMILIES, INITS, PRESETS
    from fpt.models.fpt import INPUT_INITS
    from fpt.spec import LSTM_CELLS, PRECISIONS, RANDOM_INITS
    from fpt.tasks import TASKS, paper_tasks, task_order

    raw = yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]
    filled = ("task", "backbone", "size", "init", "trainable", "input_init")
    filled += ("precision", "random_init", "lstm_cell")
    # the file names none of them: load_schema fills each enum from its registry
    assert not [d for d in filled if "enum" in raw[d]]
    defs = grid.load_schema()["$defs"]
    assert defs["task"]["enum"] == task_order(TASKS) and set(TASKS) >= set(paper_tasks())
    assert set(defs["backbone"]["enum"]) == set(FAMILIES)
    assert set(defs["trainable"]["enum"]) == set(PRESETS)
    assert set(defs["init"]["enum"]) == set(INITS)
    assert set(defs["input_init"]["enum"]) == set(INPUT_INITS)
    assert set(defs["size"]["enum"]) == {s for f in FAMILIES.values() for s in f.sizes}
    assert (defs["precision"]["enum"], defs["random_init"]["enum"]) == (
        list(PRECISIONS),
        list(RANDOM_INITS),
    )
    assert defs["lstm_cell"]["enum"] == list(LSTM_CELLS)


@pytest.mark.parametrize(
    "experiment,message",
    [
        (
            {"grid": {"task": ["bitxor"], "backbone": ["gpt2"]}},
            r"experiments\.e\.grid\.task\[0\]: 'bitxor' is not one of.*Allowed values: bit_memory, bit_xor",
        ),
        (
            {"grid": {"task": ["bit_xor"], "backbone": ["gpt3"]}},
            r"experiments\.e\.grid\.backbone\[0\].*Allowed values",
        ),
        (
            {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"], "trainable": ["frozen"]}},
            r"grid\.trainable\[0\]: 'frozen'",
        ),
        ({"grid": {"task": ["bit_xor"], "backbone": ["gpt2"], "lr": [-1]}}, r"grid\.lr\[0\]"),
        (
            {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"]}, "setings": {}},
            r"experiments\.e.*'setings' was unexpected",
        ),
        (
            {"grid": {"task": ["bit_xor"], "backbone": ["minilm"], "size": ["medium"]}},
            r"backbone 'minilm' has no size 'medium'.*Allowed sizes for minilm: l6, tiny",
        ),
        (
            {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"], "depth": [13]}},
            r"depth=13 but gpt2 \(small\) has only 12 blocks",
        ),
    ],
)
def test_bad_configs_are_rejected_with_the_key_and_the_fix(experiment, message):
    with pytest.raises(grid.ConfigError, match=message):
        grid.validate_config({"experiments": {"e": experiment}})


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(grid.ConfigError, match="does not exist"):
        grid.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments: [unclosed\n")
    with pytest.raises(grid.ConfigError, match="not valid YAML"):
        grid.load_config(bad)
