"""benchmark/gpu_check.sh, the prepared GPU check, runs its whole code on CPU at toy sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_cpu_and_prints_one_json_line_per_figure():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    cmd = ["bash", "benchmark/gpu_check.sh", "--device", "cpu", "--tiny", "--methods", "spos"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not [f for f in lines if "error" in f]
    throughput = {(f["method"], f["loop"], f["amp"]) for f in lines if f["figure"] == "supernet_img_s"}
    for amp in ("off", "bf16"):
        assert ("spos", "supernet", amp) in throughput
    assert all(f["value"] > 0 for f in lines if f["figure"] == "supernet_img_s")
    assert {f["loader"] for f in lines if f["figure"] == "decode_img_s"} == {"old", "new", "device"}
    assert {f["amp"] for f in lines if f["figure"] == "retrain_step_s"} == {"off", "bf16"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine this would run the whole check")
def test_gpu_check_without_a_gpu_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "benchmark.gpu_check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout.strip().startswith("error: --device cuda, but torch sees no CUDA GPU")
    assert len(proc.stdout.strip().splitlines()) == 1
