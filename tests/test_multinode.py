"""Multi-process correctness with real gloo processes: no shared filesystem is one line (never a hang), and a
SIGTERM under torchrun stops every rank at the same step with a checkpoint the rerun resumes exactly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import torchrun_command
from test_distributed import free_port

from ennas.core.io import read_json

REPO = Path(__file__).resolve().parent.parent
SMOKE = ["--method", "spos", "--space", "s1", "--preset", "smoke", "--set", "supernet.checkpoint_steps=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_ranks_without_a_shared_folder_stop_with_one_line_and_never_hang(tmp_path):
    port, procs = free_port(), []
    for rank in range(2):  # as two nodes whose --run-dir is not the same filesystem
        env = {
            **ENV,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "1",
            "ENNAS_SHARED_WAIT_S": "2",  # the file never comes: no need to wait the default 10 s
        }
        cmd = [sys.executable, "-m", "benchmark.run", *SMOKE, "--run-dir", str(tmp_path / f"node{rank}")]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "filesystem every node mounts" in lines[0], err
    assert not any((tmp_path / f"node{r}" / "final.json").exists() for r in range(2))


def torchrun(out: Path, port: int) -> subprocess.Popen:
    """The smoke spos run on two gloo ranks under torchrun."""
    cmd = torchrun_command(port, *SMOKE, "--run-dir", str(out))
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted smoke run under torchrun: its folder and stdout."""
    out = tmp_path_factory.mktemp("torchrun") / "whole"
    proc = torchrun(out, free_port())
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out, stdout


def test_torchrun_smoke_pipeline(whole):
    out, stdout = whole
    assert read_json(out / "final.json")["world_size"] == 2
    assert stdout.count("top-1") == 1, "rank 0 alone reports"


def test_sigterm_under_torchrun_stops_every_rank_and_the_rerun_matches_an_uninterrupted_run(whole, tmp_path):

    out = tmp_path / "stopped"
    proc = torchrun(out, free_port())
    checkpoint, deadline = out / "supernet_checkpoint.pt", time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert checkpoint.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "stopped by SIGTERM" in err, err[-3000:]
    assert not (out / "final.json").exists()

    rerun = torchrun(out, free_port())
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    a, b = read_json(out / "final.json"), read_json(whole[0] / "final.json")
    assert (a["arch"], a["top1"], a["search_score"]) == (b["arch"], b["top1"], b["search_score"])
