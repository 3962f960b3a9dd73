"""What the terminal says: progress lines name their run and stage, a file gets a line at least every 30 s of a
stage, and after a stop signal no run starts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import SMOKE_ARGS

from benchmark.run import main as run_main
from ennas.core import loop, progress

ROOT = Path(__file__).resolve().parents[1]


def test_progress_lines_name_the_run_and_its_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "HEARTBEAT_S", 0.0)  # every step: the output is a file here, not a terminal
    args = ["--method", "spos", *SMOKE_ARGS, "--seeds", "3", "--out", str(tmp_path), "--set", "progress=true"]
    assert run_main(args) == 0
    out, err = capsys.readouterr()
    assert "[spos-s1-seed3 supernet] epoch=0" in out and "[spos-s1-seed3 retrain] epoch=0" in out
    assert "[spos-s1-seed3 supernet epoch 1/2: steps] 1/4 done" in err
    assert "[spos-s1-seed3 search.jsonl" not in err  # the search's ticker names the run too, without the suffix


def test_a_slow_stage_writes_a_line_at_least_every_period(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    ticker = progress.Ticker("run stage", total=40, every_s=30.0)
    printed = []
    for _ in range(40):
        clock[0] += 7.0  # a slowed step: 7 s each
        if ticker.tick():
            printed.append(clock[0])
    gaps = [b - a for a, b in zip([0.0, *printed], printed)]
    assert len(printed) >= 280 // 37 and max(gaps) <= 30.0 + 7.0
    assert "[run stage] 5/40 done" in capsys.readouterr().err


def test_no_run_starts_after_sigint(tmp_path):
    """A plan of more runs than jobs, Ctrl-C mid-run (the whole process group, as a terminal sends it): the runs
    not yet started have no folder, and the call exits 130."""
    cmd = [sys.executable, "-m", "benchmark.run", "--method", "spos", *SMOKE_ARGS, "--seeds", "0-3", "--jobs", "2"]
    cmd += ["--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 180
    started = [tmp_path / f"spos-s1-seed{s}" / "supernet_checkpoint.pt" for s in range(4)]
    while not any(p.exists() for p in started) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert any(p.exists() for p in started), proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGINT, err
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) <= 2, folders  # only the two runs the jobs had started


def test_a_one_epoch_cosine_schedule_anneals_without_timm_warning(caplog):
    import torch

    from ennas.core.config import RetrainConfig
    from ennas.core.optim import retrain_schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cfg = RetrainConfig(epochs=1, warmup_epochs=0, lr_decay=0, lr=0.1)
    with caplog.at_level("WARNING"):
        sched = retrain_schedule(opt, cfg, steps_per_epoch=4)
    assert not [r for r in caplog.records if "no effect" in r.getMessage()]
    lrs = []
    for _ in range(3):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] > lrs[1] > lrs[2]  # it does anneal within the epoch
