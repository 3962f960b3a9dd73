"""What a user sees: one line for a missing GPU, no library warning noise, no progress-bar frames in a log."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import harness
from benchmark.run import main as run_main
from ennas.core.io import read_json

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["--method", "spos", "--preset", "smoke", "--run-dir", str(out), "--set", "device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device=cuda was requested but torch sees no CUDA GPU") and err.count("\n") == 1
    assert not out.exists()


def test_importing_the_suite_raises_no_library_warning():
    code = "import benchmark.methods, benchmark.run, spaces.flops"
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_logged_run_has_epoch_lines_with_throughput_and_no_bar_frames(tmp_path):
    """Output to a file (as on a cluster): one line per epoch with img/s and the stage's ETA, no \\r redraws."""
    cmd = [sys.executable, "-m", "benchmark.run", "--method", "spos", "--preset", "smoke", "--run-dir", str(tmp_path)]
    cmd += ["--set", "threads=1", "--set", "progress=true"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("[spos-s1-seed0 supernet] epoch=")]
    assert len(epochs) == 2 and all("img/s=" in line and "stage_eta=" in line for line in epochs)
    env = read_json(tmp_path / "config.json")["environment"]  # what the numbers depend on, recorded
    assert env["threads"] == 1 and env["libraries"]["timm"] and env["libraries"]["cvxpy"] and env["cpu_count"] >= 1


def test_a_run_uses_one_thread_alone_or_in_a_plan(monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "usable_cores", lambda: 8)
    assert [harness.worker_threads(j) for j in (1, 2, 8)] == [1, 1, 1]
    from benchmark.run import parse_args, plan_tasks

    alone = plan_tasks(parse_args(["--method", "spos", "--preset", "smoke", "--out", str(tmp_path)]))
    plan = plan_tasks(parse_args(["--method", "spos", "--preset", "smoke", "--seeds", "0-7", "--out", str(tmp_path)]))
    assert alone[0][0].threads == 1 and {t.threads for t in plan[0]} == {1}
    assert plan[1] == 8  # --jobs defaults to the core count
    told = plan_tasks(
        parse_args(["--method", "spos", "--preset", "smoke", "--set", "threads=2", "--out", str(tmp_path)])
    )
    assert told[0][0].threads == 2


def test_long_stages_print_plain_progress_lines_without_a_terminal(capsys):
    from ennas.core.progress import Ticker

    ticker = Ticker("spos search: candidates scored", total=4, every_s=0.0)
    lines = [ticker.tick() for _ in range(4)]
    assert lines[0].startswith("[spos search: candidates scored] 1/4 done,") and "eta" in lines[0]
    assert capsys.readouterr().err.count("\n") == 4  # one plain line each, no carriage-return frames
    quiet = Ticker("x", every_s=3600.0)
    assert quiet.tick() is None
