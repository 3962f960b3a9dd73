"""The method contract, checked for every registered method: registry and options, two training steps that
touch only the active paths, the whole smoke pipeline and its files, exact resume after a stop, bad input."""

import math

import pytest
import torch
from conftest import SMOKE_ARGS
from helpers import preset_config

from benchmark.methods import METHODS
from benchmark.run import main as run_main
from ennas.core import checkpoint
from ennas.core.config import SECTIONS
from ennas.core.context import RunContext
from ennas.core.io import load_torch, read_json, read_jsonl
from ennas.core.loop import train_step
from ennas.seeding import path_rng
from spaces.supernet import ChoiceLayer

NAMES = sorted(METHODS)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_method_of_the_paper_is_registered():
    assert NAMES == ["cream", "dna", "ennas", "ennas-wo-ds", "spos"]


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_its_options_section(name):
    cls = METHODS[name]
    assert cls.name == name and isinstance(cls.supervised, bool)
    if cls.options is not None:
        assert SECTIONS[cls.section] is cls.options
        cfg = preset_config("smoke", method=name, space="s1")
        assert cfg.to_dict()[cls.section] == preset_config("smoke").to_dict()[cls.section]


def active_path_grads_only(model: torch.nn.Module, paths: list) -> None:
    """Candidates on a path have gradients (Identity has no parameters), every other candidate none."""
    layers = [m for m in model.modules() if isinstance(m, ChoiceLayer)]
    assert layers, "a path loop trains a model with choice layers"
    for l, layer in enumerate(layers):
        used = {p[l] for p in paths}
        for c, op in enumerate(layer.candidates):
            grads = [p.grad for p in op.parameters()]
            if c in used:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), (l, c)
            else:
                assert all(g is None for g in grads), (l, c)


@pytest.mark.parametrize("name", NAMES)
def test_two_steps_of_every_loop_train_only_the_active_paths(name, tmp_path):
    cfg = preset_config("smoke", {"channels_last": False, "distill": {"start_epoch": 0}}, method=name, space="s1")
    ctx = RunContext(cfg, tmp_path, torch.device("cpu"))
    method = METHODS[name](ctx)
    loops = method.cost_loops(ctx.supernet)
    x, y = zip(*(ctx.data.train[i] for i in range(2 * cfg.supernet.batch_size)))
    x, y = torch.stack(x), torch.tensor(y)
    for key, loop in loops.items():
        loop.policy.on_epoch_start(loop.model, 0)
        before = [p.detach().clone() for p in loop.model.parameters()]
        for step in range(2):
            batch = slice(step * loop.plan.batch_size, (step + 1) * loop.plan.batch_size)
            stats = train_step(ctx, loop, x[batch], y[batch], 0, step)
            assert math.isfinite(stats["loss_sum"]), key
            paths = loop.policy.sample_paths(path_rng(cfg.seed, 0, step), 0, step)
            if paths:
                active_path_grads_only(loop.model, paths)
        moved = [not torch.equal(b, p) for b, p in zip(before, loop.model.parameters(), strict=True)]
        assert any(moved), f"{name} loop {key} changed no weight in two steps"


@pytest.mark.parametrize("name", NAMES)
def test_smoke_pipeline_leaves_every_result_file(name, smoke_run):
    out = smoke_run(name)
    for file in ("config.json", "train_log.jsonl", "search.jsonl", "search_result.json", "final.json"):
        assert (out / file).exists(), file
    final = read_json(out / "final.json")
    assert final["method"] == name and final["supervised"] is METHODS[name].supervised
    assert 0 <= final["top1"] <= final["top5"] <= 100 and final["flops"] > 0 and final["params"] > 0
    assert final["search_cost_device_hours"] > 0
    config = read_json(out / "config.json")
    assert config["method"] == name and "environment" in config
    records = read_jsonl(out / "search.jsonl")
    assert records and all((r["method"], r["space"], r["seed"]) == (name, "s1", 0) for r in records)
    stages = [r["stage"] for r in read_jsonl(out / "train_log.jsonl")]
    assert stages[-1] == "retrain" and len(stages) >= 2


class Stopped(BaseException):
    """Stands in for a kill: not an Exception, so no handler on the way catches it."""


def comparable_log(out):
    """Epoch records without timings (which differ between runs)."""
    return [
        {k: v for k, v in r.items() if not k.endswith(("_s", "_share"))} for r in read_jsonl(out / "train_log.jsonl")
    ]


def same_state(a, b, where="") -> None:
    """Two checkpoint states are equal: tensors bit for bit, everything else by value."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if not (isinstance(k, str) and k.endswith("_s")):
                same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            same_state(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("name", NAMES)
def test_stopped_run_resumes_to_the_uninterrupted_result(name, smoke_run, tmp_path, monkeypatch):
    """Stopped right after the third checkpoint (mid-epoch 1 for the supernet loop), the rerun ends identical."""
    whole = smoke_run(name)
    out = tmp_path / "run"
    original, calls = checkpoint.save, [0]

    def stop_after_third(*args, **kwargs):
        original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            raise Stopped

    monkeypatch.setattr(checkpoint, "save", stop_after_third)
    with pytest.raises(Stopped):
        run_main(["--method", name, *SMOKE_ARGS, "--run-dir", str(out)])
    assert not (out / "final.json").exists()
    monkeypatch.setattr(checkpoint, "save", original)
    assert run_main(["--method", name, *SMOKE_ARGS, "--run-dir", str(out)]) == 0
    keys = ("arch", "top1", "top5", "flops", "params", "search_score")
    assert {k: read_json(out / "final.json")[k] for k in keys} == {k: read_json(whole / "final.json")[k] for k in keys}
    assert comparable_log(out) == comparable_log(whole)
    assert read_jsonl(out / "search.jsonl") == read_jsonl(whole / "search.jsonl")
    same_state(load_torch(out / "supernet.pt"), load_torch(whole / "supernet.pt"), "supernet.pt")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_of_its_section_is_one_line_error(name, tmp_path, capsys):
    section = METHODS[name].section or name
    rc = run_main(["--method", name, *SMOKE_ARGS, "--run-dir", str(tmp_path / "x"), "--set", f"{section}.nope=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: unknown setting")
    assert not (tmp_path / "x").exists()
