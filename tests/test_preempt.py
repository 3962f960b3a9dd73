"""Preemption and faults: a stop signal saves the state and a rerun finishes as if uninterrupted; a checkpoint
that cannot be written keeps the previous one and says why in one line."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SMOKE_ARGS

from benchmark.run import main as run_main
from ennas.core import io as ennas_io
from ennas.core.checkpoint import CheckpointError
from ennas.core.io import read_json, read_jsonl, save_torch

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = ("arch", "flops", "params", "top1", "top5", "search_score")


def same_training(a: Path, b: Path) -> None:
    """Two runs' final results and per-epoch losses are identical (wall times aside)."""
    fa, fb = read_json(a / "final.json"), read_json(b / "final.json")
    assert {k: fa[k] for k in RESULT_KEYS} == {k: fb[k] for k in RESULT_KEYS}
    losses = [
        [(r["stage"], r["epoch"], r["loss"], r["train_acc"]) for r in read_jsonl(f / "train_log.jsonl")] for f in (a, b)
    ]
    assert losses[0] == losses[1]


def start(out: Path) -> subprocess.Popen:
    """The smoke spos run as its own process, as SLURM or a user would start it."""
    cmd = [sys.executable, "-m", "benchmark.run", "--method", "spos", *SMOKE_ARGS, "--run-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_mid_training_saves_a_checkpoint_and_the_rerun_gives_the_uninterrupted_result(
    smoke_run, tmp_path, capsys
):
    out = tmp_path / "run"
    proc = start(out)
    checkpoint = out / "supernet_checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert checkpoint.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)  # after the first step checkpoint: in the middle of supernet epoch 0
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "supernet epoch 0" in err and "rerun the same command to resume" in err
    assert "error:" not in err and "failed" not in err  # saved, not failed
    assert not (out / "final.json").exists() and not (out / "error.json").exists()
    capsys.readouterr()
    assert run_main(["--method", "spos", *SMOKE_ARGS, "--run-dir", str(out)]) == 0
    assert "[spos-s1-seed0 supernet] resuming at epoch 0 step" in capsys.readouterr().out  # says where it resumes
    same_training(out, smoke_run("spos"))


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_is_one_line(tmp_path, monkeypatch, capsys):
    good = tmp_path / "supernet_checkpoint.pt"
    save_torch(good, {"step": 1})
    before = good.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ennas_io.os, "fsync", full_disk)
    with pytest.raises(OSError):
        save_torch(good, {"step": 2, "weights": torch.zeros(1000)})
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # the temp file is gone too


def test_a_full_disk_during_a_run_keeps_the_last_checkpoint_and_exits_with_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_fsync, writes = os.fsync, []

    def fsync_until_full(fd):
        writes.append(fd)
        if len(writes) > 6:  # config.json, a few checkpoints and logs, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(ennas_io.os, "fsync", fsync_until_full)
    assert run_main(["--method", "spos", *SMOKE_ARGS, "--run-dir", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert "Traceback" not in err
    if (out / "supernet_checkpoint.pt").exists():  # the last good one loads
        assert torch.load(out / "supernet_checkpoint.pt", weights_only=False)["step"] >= 0
    monkeypatch.setattr(ennas_io.os, "fsync", real_fsync)
    assert run_main(["--method", "spos", *SMOKE_ARGS, "--run-dir", str(out)]) == 0  # space again: it resumes


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert run_main(["--method", "spos", *SMOKE_ARGS, "--run-dir", str(out)]) == 2
    finally:
        out.chmod(0o700)
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")], err
    assert "Traceback" not in err and "ermission denied" in err


def test_checkpoint_write_errors_name_the_file_and_say_the_previous_one_is_kept(tmp_path, monkeypatch):
    from ennas.core import checkpoint

    class Ctx:
        cfg = type("Cfg", (), {"to_dict": lambda self: {}})()

        def file(self, name):
            return tmp_path / name

    class Loop:
        name, model = "supernet", torch.nn.Linear(2, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        policy = type("P", (), {"state_dict": lambda self: {}})()
        extra_state, scaler = {}, None

    checkpoint.save(Ctx(), Loop(), 0, 1, {})
    before = (tmp_path / "supernet_checkpoint.pt").read_bytes()

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(ennas_io.tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointError) as caught:
        checkpoint.save(Ctx(), Loop(), 0, 2, {})
    message = str(caught.value)
    assert "\n" not in message and "supernet_checkpoint.pt" in message and "Permission denied" in message
    assert "the previous checkpoint is kept" in message
    assert (tmp_path / "supernet_checkpoint.pt").read_bytes() == before


def one_error_line(err: str) -> str:
    """The one `error:` line a failed command printed (and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_out_of_memory_is_one_line_with_the_advice(tmp_path, monkeypatch, capsys):
    from ennas.core import loop

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(loop, "train_step", no_memory)
    assert run_main(["--method", "spos", *SMOKE_ARGS, "--run-dir", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "out of memory" in line and "supernet.batch_size" in line and "supernet.accumulate=K" in line
    assert read_json(tmp_path / "run" / "error.json")["type"] == "OutOfMemoryError"


def test_an_ensemble_solver_failure_is_one_line(tmp_path, monkeypatch, capsys):
    from ennas.method import ennas
    from ennas.method.ensemble import EnsembleSolverError

    def failing(*args, **kwargs):
        raise EnsembleSolverError("ECOS returned status 'infeasible'")

    monkeypatch.setattr(ennas, "ensemble_weights", failing)
    assert run_main(["--method", "ennas-wo-ds", *SMOKE_ARGS, "--run-dir", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the ensemble-weight solver failed (ECOS returned status 'infeasible')" in line and "ennas.solver" in line


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run_main(["--method", "spos", *SMOKE_ARGS[:-1], "--out", str(blocker / "runs")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "Not a directory" in line and str(blocker) in line


def test_a_bad_bug_is_exit_status_1_with_its_traceback_kept(tmp_path, monkeypatch, capsys):
    from ennas.core import loop

    def bug(*args, **kwargs):
        raise KeyError("a key the code forgot")

    monkeypatch.setattr(loop, "train_step", bug)
    assert run_main(["--method", "spos", *SMOKE_ARGS, "--run-dir", str(tmp_path / "run")]) == 1
    assert "Traceback" in read_json(tmp_path / "run" / "error.json")["traceback"]
