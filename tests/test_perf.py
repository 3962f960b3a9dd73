"""benchmark.perf's method cost section: every method's real loops run, and DNA's figures add up as documented."""

import math

import pytest

from benchmark.perf import main as perf_main
from benchmark.perf import method_epoch_costs
from ennas.config import resolve

pytestmark = pytest.mark.usefixtures("one_thread")


def test_method_epoch_costs_cover_cream_and_dna_blocks_and_teacher():
    out = method_epoch_costs(methods=("spos", "cream", "dna"), batch=32, steps=1)
    blocks = sorted(k[: -len("_epoch_s")] for k in out if k.startswith("dna_block") and k.endswith("_epoch_s"))
    assert blocks == ["dna_block0", "dna_block1", "dna_block2", "dna_block3"]  # s1/proxy: one block per stage
    assert out["dna_epoch_s"] == pytest.approx(sum(out[f"{b}_epoch_s"] for b in blocks))
    for name in ("spos", "cream", "dna"):
        assert math.isfinite(out[f"{name}_over_spos"]) and out[f"{name}_over_spos"] > 0
    assert out["spos_over_spos"] == 1.0
    cfg = resolve("proxy", {}, method="dna", space="s1")
    teacher, blocks_total = (
        cfg.distill.teacher_epochs * out["dna_teacher_epoch_s"],
        cfg.distill.block_epochs * out["dna_epoch_s"],
    )
    stage = (teacher + blocks_total) / (cfg.supernet.epochs * out["spos_epoch_s"])
    assert out["dna_stage_over_spos"] == pytest.approx(stage)
    assert 0 < out["cream_pick_s"] and out["cream_meta_step_s"] > 0


def test_unknown_section_is_one_line_error(capsys):
    assert perf_main(["no_such_section"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown section(s) no_such_section")
