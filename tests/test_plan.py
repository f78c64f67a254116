"""`fpt plan` (fpt/plan/): a config's cost before it starts, the train jobs' auto resources,
and the estimate against finished runs."""

import json
import math
import subprocess
import sys
import types
from collections import Counter

import pytest
import torch

from fpt import grid, plan
from fpt.cli import main as cli_main
from fpt.plan import shapes
from fpt.spec import RunSpec
from tests.conftest import REPO, SNAKEMAKE

TEST_CONFIG = REPO / ".test" / "config.yaml"
FIXED_CPU = {"cpu_gflops": 50.0}  # no measured peak: the same numbers on any machine


@pytest.fixture(autouse=True)
def _shape_cache(tmp_path, monkeypatch):
    """Each test its own disk cache of model shapes (never the user's)."""
    monkeypatch.setenv(plan.CACHE_ENV, str(tmp_path / "shapes.json"))


def _config(**top):
    return {**grid.load_config(TEST_CONFIG), **top}


def _meta_model(spec: RunSpec):
    """The run's model as `fpt describe` builds it, independently of fpt.plan's caches."""
    from fpt.models import build_model
    from fpt.tasks import TASKS

    inp, head = TASKS[spec.task].shapes(dict(spec.options))
    with torch.device("meta"):
        return build_model(
            types.SimpleNamespace(input=inp, head=head),
            spec.backbone,
            spec.size,
            "random",
            spec.trainable,
            spec.depth_int,
            spec.input_init,
        )


def _eval_examples(spec: RunSpec) -> int:
    """Examples of one evaluation, from the real task (the test grid's tasks need no data)."""
    from fpt.tasks import make_task

    task = make_task(spec.task, "cpu", dict(spec.options))
    return sum(len(b) for s in task.eval_splits for b in task.eval_batches(s, 1000))


def test_the_plan_of_the_test_config_counts_every_experiment_and_the_models_own_flops():
    config = grid.load_config(TEST_CONFIG)
    g = grid.expand(config)
    p = plan.plan(config, plan.Hardware(**FIXED_CPU))
    assert [r.name for r in p.experiments] == list(g.experiments)
    for row in p.experiments:
        specs = g.specs(row.name)
        assert row.runs == len(specs) and row.source_runs == 0
        train = evals = 0
        for s in specs:
            fwd, dx, dw = _meta_model(s).flops_per_example()
            train += (fwd + dx + dw) * s.steps * s.batch_size
            n_evals = 1 + s.steps // s.eval_every + bool(s.steps % s.eval_every)
            evals += fwd * n_evals * _eval_examples(s)
        assert row.train_flops == train, row.name
        assert row.eval_flops == evals, row.name
        assert row.cpu_s > 0 and row.gpu_lone_s > 0
    assert p.total.runs == len(g.runs)  # a run two experiments share counts once
    assert p.total.train_flops == sum(
        sum(_meta_model(s).flops_per_example()) * s.steps * s.batch_size for s in g.runs.values()
    )


def test_split_sizes_are_the_tasks_own():
    from fpt.tasks import make_task

    for task, options in [
        ("bit_xor", {"val_size": 64, "test_size": 128}),
        ("bit_memory", {"n_bits": 20, "patch": 5}),
        ("digits", {}),
        ("digits", {"val_size": 0}),
    ]:
        t = make_task(task, "cpu", options)
        want = {s: sum(len(b) for b in t.eval_batches(s, 512)) for s in t.eval_splits}
        sizes = plan.split_sizes(task, options)
        assert {k: v for k, v in sizes.items() if k != "train"} == want, (task, options)
        if task == "digits":
            assert sizes["train"] == t.split_sizes()["train"]
    # paper datasets, from their published sizes and the options
    assert plan.split_sizes("mnist", {"val_size": 0}) == {"train": 60000, "test": 10000}
    assert plan.split_sizes("cifar10", {}) == {"train": 45000, "val": 5000, "test": 10000}
    listops = plan.split_sizes("listops", {"val_size": 0})
    assert listops == {"train": 96000, "test": 2000}
    assert sum(plan.split_sizes("homology")[s] for s in ("val", "test_fold")) == 736 + 718


def _spec(**kw) -> RunSpec:
    base = {"task": "bit_xor", "backbone": "gpt2", "size": "tiny", "init": "random"}
    return RunSpec(**{**base, **kw})


LARGE = {"task": "cifar10", "size": "large", "steps": 1000, "options": {"val_size": 0}}


def test_gpu_and_mfu_change_the_time_as_they_should():
    big = [plan.run_cost(_spec(**LARGE))]  # compute-bound on any GPU
    small = [plan.run_cost(_spec(steps=1000))]  # tiny GPT-2: launch-bound
    hw = plan.Hardware(gpu="H100 SXM", mfu=0.4)
    t = plan.gpu_seconds(big, hw)
    assert plan.gpu_seconds(big, plan.Hardware(gpu="H100 SXM", mfu=0.2)) == pytest.approx(2 * t)
    assert plan.gpu_seconds(big, plan.Hardware(gpu="A100", mfu=0.4)) > t  # a slower GPU
    bf16 = [plan.run_cost(_spec(**LARGE, precision="bf16"))]
    assert plan.gpu_seconds(bf16, hw) < t / 5  # tensor cores: 989 vs 67 TFLOP/s
    # launch-bound: the MFU does not matter, the launch cost does
    s = plan.gpu_seconds(small, hw)
    assert plan.gpu_seconds(small, plan.Hardware(gpu="H100 SXM", mfu=0.1)) == s
    assert plan.gpu_seconds(small, plan.Hardware(launch_us=16, mfu=0.4)) == pytest.approx(2 * s)
    # CPU: arithmetic at the given fraction of the peak, plus the per-op cost
    cpu = plan.Hardware(cpu_gflops=100, cpu_fraction=0.5, cpu_op_us=0)
    assert plan.cpu_seconds(big, cpu) == pytest.approx(
        (big[0].train_flops + big[0].total_eval_flops) / 50e9
    )
    # the CLI's options reach the Hardware
    assert plan.Hardware.from_config(_config(), gpu="L40S", mfu=0.5).gpu == "L40S"
    with pytest.raises(ValueError, match="unknown GPU"):
        plan.Hardware(gpu="TPU")


def test_fused_packs_are_never_slower_than_lone_runs():
    config = grid.load_config(TEST_CONFIG)
    p = plan.plan(config, plan.Hardware(**FIXED_CPU, pack_size=4))
    for row in [*p.experiments, p.total]:
        assert row.gpu_fused_s <= row.gpu_lone_s * (1 + 1e-12), row.name
    # seeds of one launch-bound model: one set of launches for the pack
    seeds = [plan.run_cost(_spec(seed=s, steps=1000)) for s in range(4)]
    hw = plan.Hardware()
    assert plan.gpu_seconds(seeds, hw) < 0.5 * sum(plan.gpu_seconds([c], hw) for c in seeds)
    assert plan.cpu_seconds(seeds, plan.Hardware(**FIXED_CPU)) < sum(
        plan.cpu_seconds([c], plan.Hardware(**FIXED_CPU)) for c in seeds
    )
    # packs as the grid makes them (fpt.packs): pretrained runs across seeds and lrs, random
    # ones across the lrs of one seed, at most pack_size each; the rest alone
    points = [(s, lr) for s in range(3) for lr in (1e-3, 1e-4)]
    pretrained = [_spec(init="pretrained", seed=s, lr=lr) for s, lr in points]
    assert [len(q) for q in plan.packs(pretrained, 4)] == [4, 2]
    random = [_spec(seed=s, lr=lr) for s, lr in points] + [_spec(steps=7)]
    assert [len(q) for q in plan.packs(random, 4)] == [2, 2, 2, 1]


def test_a_large_cifar_run_asks_for_more_than_a_bit_xor_run():
    for device in ("cpu", "cuda"):
        config = _config(
            device=device,
            train_mem_mb="auto",
            train_runtime_min="auto",
            **{"estimate": {**plan.estimate_defaults(), **FIXED_CPU}},
        )
        large = plan.job_resources([_spec(**LARGE, backbone="gpt2")], config)
        small = plan.job_resources([_spec(steps=40)], config)
        assert large["runtime"] > small["runtime"] >= plan.MIN_RUNTIME_MIN, device
        assert large["mem_mb"] > small["mem_mb"] > plan.FLOOR_MB, device
    # GPT-2 large fp32 weights alone are ~3 GB of host RAM while loading
    assert large["mem_mb"] > 3000


def test_resources_auto_or_a_number():
    from fpt.workflow_support import train_resources

    spec = _spec(steps=40)
    flat = _config(train_mem_mb=1234, train_runtime_min=7)
    assert train_resources([spec], flat) == {"runtime": 7, "mem_mb": 1234}
    auto = _config(train_mem_mb="auto", train_runtime_min="auto")
    res = train_resources([spec], auto)
    assert res["runtime"] >= plan.MIN_RUNTIME_MIN and res["mem_mb"] % 100 == 0
    mixed = _config(train_mem_mb="auto", train_runtime_min=3)
    assert train_resources([spec], mixed) == {"runtime": 3, "mem_mb": res["mem_mb"]}
    # safety factors scale the estimate
    safer = _config(
        train_mem_mb="auto",
        estimate={"mem_safety": 2 * plan.estimate_defaults()["mem_safety"]},
    )
    assert train_resources([spec], safer)["mem_mb"] >= 1.8 * res["mem_mb"] - 100
    # a pack: frozen weights once, state and activations per run; runtime shared launches
    pack = [_spec(steps=40, seed=s, init="pretrained") for s in range(4)]
    one, four = (train_resources(p, auto) for p in (pack[:1], pack))
    assert one["mem_mb"] <= four["mem_mb"] < 4 * one["mem_mb"]
    assert one["runtime"] <= four["runtime"] <= 4 * one["runtime"]
    # the schema: auto is the default, a number or auto is allowed, nothing else
    raw = {k: v for k, v in _config().items() if k not in ("train_mem_mb", "train_runtime_min")}
    filled = grid.validate_config(raw)
    assert filled["train_mem_mb"] == "auto" and filled["train_runtime_min"] == "auto"
    for bad in ({"train_mem_mb": "fast"}, {"train_mem_mb": 100}, {"train_runtime_min": 0}):
        with pytest.raises(grid.ConfigError, match="train_"):
            grid.validate_config({**raw, **bad})
    with pytest.raises(grid.ConfigError, match="estimate"):
        grid.validate_config({**raw, "estimate": {"gpu": "TPU"}})


def test_the_schemas_gpus_are_the_table():
    from fpt.schema import schema_file

    est = schema_file()["properties"]["estimate"]["properties"]
    assert est["gpu"]["enum"] == list(plan.GPUS)
    # the estimate's defaults are the schema's own
    assert plan.Hardware().gpu == plan.DEFAULT_GPU == est["gpu"]["default"]
    assert plan.Hardware().mfu == est["gpu_mfu"]["default"]


def test_fpt_plan_prints_text_json_and_tsv(capsys):
    args = ["plan", "--configfile", str(TEST_CONFIG), "--cpu-gflops", "50"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    for name in ("table1", "protocol_paper", "protocol_swept", "grid (unique runs)", "H100 SXM"):
        assert name in text
    assert cli_main([*args, "--gpu", "A100", "--mfu", "0.5", "--json", "--runs"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hardware"]["gpu"] == "A100" and data["hardware"]["mfu"] == 0.5
    assert [e["name"] for e in data["experiments"]] == [
        "table1",
        "protocol_paper",
        "protocol_swept",
    ]
    assert len(data["runs"]) == data["total"]["runs"] == 9
    assert cli_main([*args, "--tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == list(plan.TSV_COLUMNS) and len(lines) == 1 + 3 + 1
    assert cli_main([*args, "--md"]) == 0
    assert "| experiment |" in capsys.readouterr().out
    assert cli_main([*args, "--tsv", "--runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:2] == ["run", "steps"] and len(lines) == 1 + 9


def test_shapes_are_cached_on_disk_and_invalidated_by_the_code(tmp_path, monkeypatch):
    path = tmp_path / "shapes.json"
    monkeypatch.setenv(shapes.CACHE_ENV, str(path))
    monkeypatch.setattr(shapes, "SHAPES", {})
    spec = _spec(size="small", trainable="output_only")
    shape = shapes.model_shape(spec)
    shapes.save_shape_cache()
    assert path.is_file()
    # a fresh process: no model is built
    monkeypatch.setattr(shapes, "SHAPES", {})
    shapes.DISK.clear()

    def no_build(spec):
        raise AssertionError("built a model")

    monkeypatch.setattr(shapes, "build_shape", no_build)
    assert shapes.model_shape(spec) == shape
    # other code: the cache is not trusted
    monkeypatch.setattr(shapes, "SHAPES", {})
    shapes.DISK.clear()
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "fingerprint": "older code"}))
    with pytest.raises(AssertionError, match="built a model"):
        shapes.model_shape(spec)
    shapes.DISK.clear()
    monkeypatch.setenv(shapes.CACHE_ENV, "off")
    with pytest.raises(AssertionError, match="built a model"):
        shapes.model_shape(spec)
    shapes.DISK.clear()


def test_cached_features_cost_a_forward_per_example_then_head_only_steps():
    options = {"cache_features": True, "augment": False}
    base = {"task": "digits", "size": "small", "trainable": "output_only", "steps": 3000}
    cached = plan.run_cost(_spec(**base, options=options))
    plain = plan.run_cost(_spec(**base, options={"augment": False}))
    assert cached.train_flops < plain.train_flops / 5
    shape = plan.model_shape(_spec(**base, options=options))
    assert cached.once_flops == shape.fwd * 1797  # every example once


def test_compare_reads_finished_runs(tmp_path, capsys):
    from fpt.train import train

    spec = _spec(
        steps=20,
        batch_size=4,
        eval_every=10,
        ckpt_every=100,
        options={"val_size": 16, "test_size": 32},
    )
    results = tmp_path / "results"
    train(spec, results / "runs" / spec.path, device="cpu", threads=1)
    rows, summary = plan.compare(results, plan.Hardware(**FIXED_CPU))
    assert [r["run"] for r in rows] == [spec.path]
    (row,) = rows
    assert row["model"] == "cpu" and row["steps"] == 20
    assert row["predicted_s"] > 0 and row["measured_s"] > 0
    assert summary["ratio"] == pytest.approx(row["measured_s"] / row["predicted_s"])
    assert math.isfinite(summary["median_ratio"])
    assert row["max_rss_mb"] is None and summary["memory_runs"] == 0
    # with the Snakemake benchmark of the run: its peak memory beside the estimate
    from fpt.workflow_support import BENCHMARK_COLUMNS

    bench = results / "benchmarks" / "train" / f"{spec.path}.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("\t".join(BENCHMARK_COLUMNS) + "\n2.0\t0:00:02\t900\t1\t1\t1\t0\t0\t50\t2\n")
    (row,), summary = plan.compare(results, plan.Hardware(**FIXED_CPU))
    assert row["max_rss_mb"] == 900 and row["predicted_mb"] > plan.FLOOR_MB
    assert summary["median_mem_ratio"] == pytest.approx(900 / row["predicted_mb"])
    args = ["plan", "--configfile", str(TEST_CONFIG), "--cpu-gflops", "50"]
    assert cli_main([*args, "--compare", str(results)]) == 0
    out = capsys.readouterr().out
    assert spec.path in out and "ratio measured/predicted" in out
    assert cli_main([*args, "--compare", str(results), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["runs"] == 1
    assert cli_main([*args, "--compare", str(results), "--tsv"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split("\t")[:2] == ["run", "model"] and line.startswith(spec.path + "\tcpu\t")


def test_gpu_names_of_torch_devices():
    assert plan.gpu_for_device_name("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert plan.gpu_for_device_name("NVIDIA H100 PCIe") == "H100 PCIe"
    assert plan.gpu_for_device_name("NVIDIA H200") == "H200"
    assert plan.gpu_for_device_name("NVIDIA A100-SXM4-80GB") == "A100"
    assert plan.gpu_for_device_name("NVIDIA GeForce RTX 4090") == "RTX 4090"
    assert plan.gpu_for_device_name("NVIDIA L40S") == "L40S"
    # every catalogue entry is found by the names it declares
    for gpu in plan.GPUS.values():
        assert plan.gpu_for_device_name("NVIDIA " + " ".join(gpu.device_names)) == gpu.name
    assert plan.gpu_for_device_name("cpu") is None


@pytest.mark.slow
def test_the_workflow_plans_auto_resources_and_the_plan_rule(tmp_path):
    """A dry run of the test grid with auto resources asks each train job for its estimate;
    rule plan writes the plan's TSV and Markdown."""
    import yaml

    from fpt.workflow_support import train_resources

    raw = yaml.safe_load(TEST_CONFIG.read_text())
    raw.update(train_mem_mb="auto", train_runtime_min="auto", results_dir="results")
    raw["estimate"] = {"cpu_gflops": 50}
    cfg_file = tmp_path / "auto.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    base = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(cfg_file)]
    out = subprocess.run([*base, "-n"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    got = Counter(
        (int(m["mem_mb"]), int(m["runtime"]))
        for m in (
            dict(kv.split("=", 1) for kv in line.split(", "))
            for line in _train_resource_lines(out.stdout)
        )
    )
    config = grid.load_config(cfg_file)
    want = Counter(
        (r["mem_mb"], r["runtime"])
        for r in (train_resources([s], config) for s in grid.expand(config).runs.values())
    )
    assert got == want
    out = subprocess.run([*base, "--cores", "1", "plan"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    tsv = (tmp_path / "results/plan.tsv").read_text().splitlines()
    assert len(tsv) == 1 + 3 + 1 and "grid (unique runs)" in tsv[-1]
    assert "| table1 |" in (tmp_path / "results/plan.md").read_text()
    assert "grid (unique runs)" in out.stdout


def _train_resource_lines(stdout: str) -> list[str]:
    import re

    blocks = re.findall(r"^rule train:\n(.*?)(?=^\[|^rule |\Z)", stdout, re.M | re.S)
    return [re.search(r"^\s+resources: (.*)$", b, re.M).group(1) for b in blocks]


@pytest.mark.slow
def test_the_paper_grid_plans_in_seconds():
    out = subprocess.run(
        [sys.executable, "-m", "fpt", "plan", "--configfile", "config.yaml", "--tsv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    names = [line.split("\t")[0] for line in out.stdout.splitlines()[1:]]
    config = grid.load_config(REPO / "config.yaml")
    assert names == [*config["experiments"], "grid (unique runs)"]
