"""benchmark.perf's method cost and data path sections: every method's real loops run, DNA's figures add up as
documented, and both ImageNet loaders decode a generated JPEG folder."""

import json
import math
import time

import pytest
from helpers import preset_config

from benchmark.perf import data_path, method_epoch_costs
from benchmark.perf import main as perf_main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_method_epoch_costs_cover_every_loop_and_add_up_to_the_stage():
    out = method_epoch_costs(methods=("spos", "cream", "dna"), batch=32, steps=1)
    blocks = sorted(k[: -len("_epoch_s")] for k in out if k.startswith("dna_block") and k.endswith("_epoch_s"))
    assert blocks == ["dna_block0", "dna_block1"]  # s1/proxy: one block per stage
    loops = {"spos": ["spos"], "cream": ["cream"], "dna": ["dna_teacher", *blocks]}
    cfg = preset_config("proxy", {}, method="dna", space="s1")
    dna = cfg.options("dna")
    assert out["dna_teacher_epochs"] == dna.teacher_epochs and out["dna_block0_epochs"] == dna.block_epochs
    assert out["spos_epochs"] == cfg.supernet.epochs
    for name, keys in loops.items():  # a method's epoch is one epoch of each loop; its stage, each at its count
        assert out[f"{name}_epoch_s"] == pytest.approx(sum(out[f"{k}_epoch_s"] for k in keys))
        assert out[f"{name}_stage_s"] == pytest.approx(sum(out[f"{k}_epochs"] * out[f"{k}_epoch_s"] for k in keys))
        assert math.isfinite(out[f"{name}_over_spos"]) and out[f"{name}_over_spos"] > 0
        assert out[f"{name}_stage_over_spos"] == pytest.approx(out[f"{name}_stage_s"] / out["spos_stage_s"])
    assert out["spos_over_spos"] == 1.0
    assert 0 < out["cream_pick_s"] and out["cream_meta_step_s"] > 0


def test_unknown_section_is_one_line_error(capsys):
    assert perf_main(["no_such_section"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown section(s) no_such_section")


def test_data_path_measures_old_and_new_loader_side_by_side():
    out = data_path(images=8, resolution=16, batch=4, workers=1, rounds=1)
    assert out["old_img_s"] > 0 and out["new_img_s"] > 0 and out["speedup_new_over_old"] > 0
    assert out["old_bytes_per_image"] == 4 * out["new_bytes_per_image"] == 4 * 3 * 16 * 16  # float32 vs uint8


def test_concurrent_runs_time_one_alone_and_two_at_once_with_the_default_threads(monkeypatch):
    import subprocess

    from benchmark import perf

    calls = []

    def fake_run(cmd, **kwargs):  # the real runs take minutes; what is run, and how it is timed, is checked here
        calls.append((cmd, kwargs["env"]))
        time.sleep(0.02 * (2 if "--jobs" in cmd else 1))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    found = perf.concurrent_runs(rounds=2, overrides=("supernet.epochs=1",))
    assert len(calls) == 4
    alone, pair = calls[0][0], calls[1][0]
    assert alone[alone.index("--seeds") + 1] == "0" and "--jobs" not in alone
    assert pair[pair.index("--seeds") + 1] == "0-1" and pair[pair.index("--jobs") + 1] == "2"
    assert "supernet.epochs=1" in alone and all("OMP_NUM_THREADS" not in env for _, env in calls)  # the defaults
    assert 1.5 < found["ratio_each_of_two_over_alone"] < 3.0 and found["goal"] == "<= 2.2"


def test_cost_ratio_stops_on_its_goal_unless_the_rounds_are_fixed(monkeypatch, capsys):
    """The pre-registered decision takes a fixed number of rounds; without --cost-rounds the ratio stops as soon as
    its interval is within ±5 % (here at the fourth round, every ratio being exactly 1.1)."""
    from benchmark import perf_costs

    monkeypatch.setattr(perf_costs, "_loops", lambda methods, batch, steps: ({}, []))
    monkeypatch.setattr(
        perf_costs,
        "_epoch_round",
        lambda loops, b, order, epoch, meta_interval: {m: 1.0 + 0.1 * (m != "spos") for m in order},
    )
    assert perf_costs.cost_ratio(methods=("spos", "ennas"))["rounds"] == 4
    assert perf_main(["cost_ratio", "--cost-rounds", "7"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])["cost_ratio"]
    assert out["rounds"] == 7 and out["ennas_over_spos"]["ratio"] == pytest.approx(1.1)
    assert perf_main(["cost_ratio", "--cost-rounds", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: --cost-rounds must be at least 2")
