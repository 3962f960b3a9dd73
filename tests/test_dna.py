"""DNA: teacher alignment, block inputs from the teacher, layer-wise rating, exact traversal, its smoke run
and per-block resume (resume and the pipeline itself for every method: test_method_contract.py)."""

import copy
import dataclasses
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import preset_config

from baselines.dna import DNA
from baselines.dna.blocks import BlockDistillation
from baselines.dna.rating import calibrate, feature_rating, rate_block
from baselines.dna.teacher import align_stages, block_pairs, block_ranges, block_sizes, teacher_features
from baselines.dna.traverse import traverse
from ennas.core.context import RunContext
from ennas.core.evaluate import recalibrate_bn
from ennas.core.io import read_json, read_jsonl
from ennas.core.loop import Step
from spaces.registry import get_space

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dna(tmp_path_factory):
    cfg = preset_config("smoke", {"channels_last": False}, method="dna", space="s1")
    method = DNA(RunContext(cfg, tmp_path_factory.mktemp("dna"), torch.device("cpu")))
    method.build()
    method.teacher.eval()
    return method


@pytest.fixture(scope="module")
def images(dna):
    return dna.ctx.data.to_device(torch.stack([dna.ctx.data.search[i][0] for i in range(6)]), "cpu")


# --- blocks and teacher stages --------------------------------------------------------------------
def test_blocks_are_the_stages_of_the_space():
    assert block_ranges(get_space("s1", "proxy")) == [(0, 4), (4, 8)]
    assert block_ranges(get_space("s1", "imagenet")) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]
    assert block_ranges(get_space("spos", "imagenet")) == [(0, 4), (4, 8), (8, 16), (16, 20)]
    assert block_sizes(get_space("s1", "proxy"), 28) == [7, 4]
    assert block_sizes(get_space("s1", "imagenet"), 224) == [56, 28, 14, 14, 7]


def test_align_stages_matches_strides_and_flattens_where_the_supernet_keeps_resolution():
    b0 = [1, 2, 2, 2, 1, 2, 1]  # EfficientNet-B0 / MobileNetV2 stage strides
    assert align_stages(b0, [2, 2, 2, 1, 2]) == ([1, 2, 3, 4, 5], [])  # ImageNet s1: B0 stages 2-6
    assert align_stages(b0, [2, 2]) == ([1, 2], [])  # proxy s1: B0 stages 1-2 (7 and 4 px after a stride-2 stem)
    assert align_stages(b0, [2, 2, 1, 2]) == ([1, 2, 3, 5], [3])  # stage 4 loses its stride
    with pytest.raises(ValueError, match="cannot be aligned"):
        align_stages([2, 2], [2, 2, 2])


def stage_output(teacher, j, x):
    """The output of teacher stage j (teacher.blocks[j]) from a full ordinary forward, by a hook."""
    seen = []
    handle = teacher.blocks[j].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        teacher(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("i", [0, 1])
def test_block_input_is_the_teachers_previous_stage_and_target_its_stage(dna, images, i):
    model = dna.ctx.supernet
    block = dna.block(model, i)
    seen = {}

    def keep(name):  # a hook that records its tensor and returns None (leaves the call unchanged)
        def hook(module, args, *out):
            seen.setdefault(name, out[0] if out else args[0])

        return hook

    hooks = [
        block.register_forward_pre_hook(keep("block_in")),
        block.layers[0].register_forward_pre_hook(keep("layer_in")),
        block.register_forward_hook(keep("out")),
    ]
    method = BlockDistillation(i, (1,) * len(block.layers), dna.teacher, dna.block_indices(i))
    captured = []
    method.criterion = lambda out, target: captured.append(target) or ((out - target) ** 2).mean()
    block.eval()
    with torch.no_grad():
        method.batch_loss(
            block, Step(images, torch.zeros(len(images), dtype=torch.long), [(0,) * len(block.layers)], 0, 0, 0.1)
        )
    for h in hooks:
        h.remove()
    target = stage_output(dna.teacher, dna.indices[i] - 1, images)
    assert torch.allclose(captured[0], target, atol=1e-5)
    assert seen["out"].shape == target.shape  # resolution and width match the teacher's stage
    assert target.shape[-1] == block_sizes(dna.ctx.space, 28)[i]
    if i == 0:
        assert torch.equal(seen["block_in"], images)
        assert torch.allclose(seen["layer_in"], model.stem.eval()(images), atol=1e-5)
    else:
        previous = stage_output(dna.teacher, dna.indices[i - 1] - 1, images)
        assert torch.allclose(seen["block_in"], previous, atol=1e-5)
        with torch.no_grad():
            assert torch.allclose(seen["layer_in"], dna.adapters[f"in{i}"].eval()(previous), atol=1e-5)


def test_layerwise_rating_equals_recalibrating_the_whole_path(dna, images):
    """Sharing prefixes changes nothing: each path's rating equals recalibrating and running it whole."""
    model, i = dna.ctx.supernet, 1
    block = dna.block(model, i)
    recal_x = [
        dna.ctx.data.to_device(torch.stack([dna.ctx.data.recal[k][0] for k in range(j, j + 8)]), "cpu") for j in (0, 8)
    ]
    recal = [teacher_features(dna.teacher, x, [dna.indices[0]])[0] for x in recal_x]
    inputs, targets = zip(*(block_pairs(dna.teacher, x, dna.block_indices(i)) for x in (images[:3], images[3:])))
    data = (*calibrate(copy.deepcopy(block.entry), recal, list(inputs), "cpu"), list(targets))
    paths = [(0, 9, 9, 9), (3, 9, 2, 1), (3, 2, 0, 0), (8, 5, 4, 3)]  # paths sharing prefixes
    layerwise = dict(rate_block(block, paths, data, "cpu"))
    assert sorted(layerwise) == sorted(paths)
    for path in paths:
        ops = [layer.candidates[c] for layer, c in zip(block.layers, path, strict=True)]
        modules = (block.entry, *ops, block.exit)
        whole = torch.nn.Sequential(*(copy.deepcopy(m) for m in modules))
        recalibrate_bn(whole, [(x, None) for x in recal])
        whole.eval()
        with torch.no_grad():
            expected = feature_rating([whole(x) for x in inputs], targets, "cpu")
        assert layerwise[path]["rating"] == pytest.approx(expected["rating"], rel=1e-4)


# --- traversal ------------------------------------------------------------------------------------
def brute_force(options, budget):
    best = None
    for combo in itertools.product(*(range(len(block)) for block in options)):
        cost = sum(options[i][k][1] for i, k in enumerate(combo))
        rating = sum(options[i][k][0] for i, k in enumerate(combo))
        if cost <= budget and (best is None or rating < best[1]):
            best = (combo, rating, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_traversal_finds_the_brute_force_optimum_within_budget(seed):
    rng = np.random.default_rng(seed)
    options = [[(float(rng.random()), int(rng.integers(1, 50))) for _ in range(rng.integers(2, 9))] for _ in range(4)]
    low = sum(min(c for _, c in block) for block in options)
    high = sum(max(c for _, c in block) for block in options)
    for budget in np.linspace(low, high, 7):
        choice, rating, cost = traverse(options, budget)
        expected = brute_force(options, budget)
        assert cost <= budget
        assert cost == sum(options[i][k][1] for i, k in enumerate(choice))
        assert rating == pytest.approx(expected[1], abs=1e-12)
    with pytest.raises(ValueError, match="fits the budget"):
        traverse(options, low - 1)


# --- search modes and teacher sources ------------------------------------------------------------
def test_blocks_too_large_to_enumerate_fall_back_to_evolution_on_summed_ratings(dna, monkeypatch):
    monkeypatch.setattr(dna, "opts", dataclasses.replace(dna.opts, exhaustive_limit=10))
    dna.teacher_ready = True  # the untrained teacher is enough to check the bookkeeping
    result = dna.search(dna.ctx.supernet)
    assert result["search_mode"] == "evolution" and result["flops"] <= dna.ctx.flops_budget
    ratings = {(r["block"], r["path"]): r["rating"] for r in read_jsonl(dna.ctx.file("dna_ratings.jsonl"))}
    records = read_jsonl(dna.ctx.file("search.jsonl"))
    assert len(records) == 6 * 3 and all(r["flops"] <= dna.ctx.flops_budget for r in records)
    for record in records:  # every evaluated architecture scores minus the sum of its logged block ratings
        arch = [int(c) for c in record["arch"].split("-")]
        parts = [(b, "-".join(map(str, arch[s:e]))) for b, (s, e) in enumerate(dna.ranges)]
        assert record["score"] == pytest.approx(-sum(ratings[p] for p in parts))
    assert result["search_score"] == max(r["score"] for r in records)


def test_teacher_loads_from_a_local_checkpoint_without_training(dna, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": dna.teacher.state_dict()}, path)
    cfg = preset_config("smoke", {"channels_last": False, "dna": {"teacher_checkpoint": str(path)}}, method="dna")
    other = DNA(RunContext(cfg, tmp_path / "run", torch.device("cpu")))
    other.ready_teacher()
    assert other.info["teacher_source"] == str(path) and not other.ctx.file("train_log.jsonl").exists()
    for a, b in zip(other.teacher.state_dict().values(), dna.teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not other.teacher.training and read_json_pt(other.ctx.file("teacher.pt"))["teacher_source"] == str(path)


def read_json_pt(path):
    return torch.load(path, weights_only=False)


# --- its smoke run ---------------------------------------------------------------------------------
def test_smoke_run_trains_teacher_and_blocks_then_searches_on_summed_ratings(smoke_run):
    """The proxy's blocks hold 9 x 10^3 paths each, over the smoke preset's `dna.exhaustive_limit`, so the smoke
    run takes the evolution mode (the traversal mode is checked on its own below)."""
    out = smoke_run("dna")
    final = read_json(out / "final.json")
    assert final["extras"]["teacher"] == "mobilenetv2_100" and 0 <= final["extras"]["teacher_search_acc"] <= 100
    log = read_jsonl(out / "train_log.jsonl")
    assert list(dict.fromkeys(r["stage"] for r in log)) == ["teacher", "dna_block0", "dna_block1", "retrain"]
    assert all(r["device_s"] > 0 for r in log)
    assert final["supernet_device_s"] == pytest.approx(sum(r["device_s"] for r in log if r["stage"] != "retrain"))
    ratings = read_jsonl(out / "dna_ratings.jsonl")
    search = read_json(out / "search_result.json")
    assert search["search_mode"] == "evolution" and search["flops"] <= budget_of(out)
    assert search["rated_paths"] == len({(r["block"], r["path"]) for r in ratings})
    arch = [int(c) for c in final["arch"].split("-")]
    logged = {(r["block"], r["path"]): r["rating"] for r in ratings}
    for b, (start, stop) in enumerate(block_ranges(get_space("s1", "proxy"))):
        assert logged[(b, "-".join(map(str, arch[start:stop])))] == pytest.approx(search["block_ratings"][b])


def test_traversal_mode_rates_every_block_path_and_returns_the_best_sum_under_budget(dna, monkeypatch):
    """With the blocks under `dna.exhaustive_limit` every path of every block is rated once and the traversal's
    architecture is the best summed rating under the budget (ratings stubbed by a fixed random table, so the
    optimum is known by brute force over the per-block rating/MACs tables)."""
    rng = np.random.default_rng(0)
    table = {}
    calls = []

    def rate(model, block, paths):
        calls.append((block, len(paths)))
        return [table.setdefault((block, tuple(p)), float(rng.random())) for p in paths]

    monkeypatch.setattr("baselines.dna.rating.RatingLog.rate", lambda self, model, i, paths: rate(model, i, paths))
    monkeypatch.setattr(dna, "opts", dataclasses.replace(dna.opts, exhaustive_limit=10**4))
    dna.teacher_ready = True
    result = dna.search(dna.ctx.supernet)
    assert result["search_mode"] == "traversal" and result["flops"] <= dna.ctx.flops_budget
    sizes = [int(np.prod(dna.ctx.space.num_choices[a:b])) for a, b in dna.ranges]
    assert calls == list(enumerate(sizes))  # each block rated exactly once, every path
    budget = dna.ctx.flops_budget - dna.ctx.table.fixed_macs
    options = [[(r, dna.path_macs(b, p)) for (blk, p), r in table.items() if blk == b] for b in range(len(sizes))]
    (r0, c0), (r1, c1) = (np.array(o, dtype=float).T for o in options)
    order = np.argsort(c1)
    cheapest_best = np.minimum.accumulate(r1[order])  # best block-1 rating among its paths up to each cost
    fits = np.searchsorted(c1[order], budget - c0, side="right") - 1  # per block-0 path: affordable block-1 paths
    best = min(r0[k] + cheapest_best[j] for k, j in enumerate(fits) if j >= 0)
    assert result["summed_rating"] == pytest.approx(best)


def test_a_lost_block_is_retrained_alone_to_the_same_loss(smoke_run, tmp_path):
    """Training again keeps the teacher and block 0 and retrains block 1 to the same loss (its data order,
    paths and RNG state come from the files and checkpoints)."""
    out = tmp_path / "run"
    shutil.copytree(smoke_run("dna"), out)
    (out / "dna_block1_checkpoint.pt").unlink()
    log = read_jsonl(out / "train_log.jsonl")
    cfg = preset_config("smoke", {"supernet": {"checkpoint_steps": 2}, "threads": 1}, method="dna", space="s1")
    ctx = RunContext(cfg, out, torch.device("cpu"))
    DNA(ctx).train_supernet(ctx.supernet)
    before = {r["stage"]: r for r in log}
    after = {r["stage"]: r for r in read_jsonl(out / "train_log.jsonl")}
    for stage in ("teacher", "dna_block0"):
        assert after[stage] == before[stage]  # not rerun: identical, timings included
    assert after["dna_block1"]["loss"] == before["dna_block1"]["loss"]


def budget_of(out: Path) -> float:
    cfg = preset_config("smoke", {}, method="dna", space="s1")
    return RunContext(cfg, out, torch.device("cpu")).flops_budget
