"""benchmark.perf's method cost section: every method's real loops run, and DNA's figures add up as documented."""

import math

import pytest
from helpers import preset_config

from benchmark.perf import main as perf_main
from benchmark.perf import method_epoch_costs

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
