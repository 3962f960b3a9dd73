"""The whole SPOS pipeline on the smoke preset: outputs, crash-safe resume, budget and error handling."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.run import main as run_main
from ennas.core.io import read_json, read_jsonl

REPO = Path(__file__).resolve().parent.parent
SMOKE = ["--method", "spos", "--space", "s1", "--preset", "smoke", "--set", "supernet.checkpoint_steps=2"]

# Runs benchmark.run in a child process that SIGKILLs itself right after the N-th call of a function
# (a checkpoint save, a candidate's scoring): a real kill, no cleanup, no exception handlers.
KILLER = """
import os, signal, sys
import {module} as target
original = target.{function}
calls = [0]
def wrapped(*args, **kwargs):
    result = original(*args, **kwargs)
    calls[0] += 1
    if calls[0] == {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
target.{function} = wrapped
{extra}
from benchmark.run import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(args, kill=None, check=True):
    """Run the CLI in a fresh process; `kill=(module, function, after)` kills it after that many calls."""
    if kill is None:
        cmd = [sys.executable, "-m", "benchmark.run", *args]
    else:
        module, function, after, extra = kill
        code = KILLER.format(module=module, function=function, after=after, extra=extra)
        cmd = [sys.executable, "-c", code, *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and kill is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def comparable_log(out):
    """Epoch records without timings (which differ between runs)."""
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in read_jsonl(out / "train_log.jsonl")]


def final_metrics(out):
    final = read_json(out / "final.json")
    return {k: final[k] for k in ("arch", "top1", "top5", "flops", "params", "search_score")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run_cli([*SMOKE, "--run-dir", str(out)])
    return out


def test_smoke_run_leaves_every_result_file(uninterrupted):
    for name in ("config.json", "train_log.jsonl", "search.jsonl", "final.json"):
        assert (uninterrupted / name).exists(), name
    final = read_json(uninterrupted / "final.json")
    assert final["method"] == "spos" and final["supervised"] is False
    assert 0 <= final["top1"] <= final["top5"] <= 100
    config = read_json(uninterrupted / "config.json")
    assert config["supernet"]["checkpoint_steps"] == 2 and "environment" in config
    records = read_jsonl(uninterrupted / "search.jsonl")
    budget = read_json(uninterrupted / "search_result.json")
    assert len(records) == 6 * 3 and budget["arch"] == final["arch"]


def test_search_never_evaluates_over_budget(uninterrupted):
    from ennas.core.context import default_budget
    from spaces.flops import FlopsTable
    from spaces.registry import get_space

    space = get_space("s1", "proxy")
    budget = default_budget(space, FlopsTable(space, 28, 10, 1))
    for name in ("search.jsonl", "random_search.jsonl"):
        assert all(r["flops"] <= budget for r in read_jsonl(uninterrupted / name))


@pytest.mark.parametrize(
    "kill",
    [
        ("ennas.core.checkpoint", "save", 1, ""),  # mid-epoch, after the supernet's first checkpoint
        ("ennas.core.checkpoint", "save", 5, ""),  # after retraining's checkpoint, before final.json
        ("ennas.core.evolution", "score_path", 5, ""),  # in the middle of the evolution search
    ],
    ids=["first-checkpoint", "retrain", "search"],
)
def test_killed_run_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, kill):
    out = tmp_path / "run"
    killed = run_cli([*SMOKE, "--run-dir", str(out)], kill=kill)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "final.json").exists()
    run_cli([*SMOKE, "--run-dir", str(out)])
    assert final_metrics(out) == final_metrics(uninterrupted)
    assert comparable_log(out) == comparable_log(uninterrupted)
    assert read_jsonl(out / "search.jsonl") == read_jsonl(uninterrupted / "search.jsonl")


def test_no_half_written_files_after_a_kill(tmp_path):
    out = tmp_path / "run"
    run_cli([*SMOKE, "--run-dir", str(out)], kill=("ennas.core.checkpoint", "save", 2, ""))
    for path in out.iterdir():
        assert not path.name.endswith(".tmp") or path.name.startswith("."), path
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".jsonl":
            read_jsonl(path)


@pytest.mark.parametrize(
    "args,message,status",
    [
        (["--method", "nope"], "unknown method 'nope'; known:", 2),
        (
            ["--space", "s9"],
            "unknown search space 's9'; known: cream, dna, dna_w96_160, dna_w96_192, s1, s2, s3, spos",
            2,
        ),
        (["--preset", "huge"], "unknown preset 'huge'; known:", 2),
        (["--set", "supernet.lr"], "--set takes key=value", 2),
        (["--set", "supernet.nope=1"], "unknown setting 'supernet.nope'", 2),
        (["--set", "supernet.epochs=two"], "supernet.epochs", 2),
        # Found before the plan starts: one line, nothing written (checked below).
        (["--dataset", "imagenet", "--data", "/nonexistent/imagenet"], "/nonexistent/imagenet", 2),
        (["--data", "/nonexistent/fashion"], "/nonexistent/fashion", 2),
        (["--set", "search.flops_budget=1000"], "below the cheapest architecture", 2),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, args, message, status):
    # In-process (a child process per case costs seconds of imports); an uncaught exception fails the test,
    # and test_bad_input_in_a_real_process covers the process boundary once.
    assert run_main([*SMOKE, "--run-dir", str(tmp_path / "x"), *args]) == status
    captured = capsys.readouterr()
    stderr = captured.err
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], stderr[-2000:]
    if "budget" in message:
        assert not (tmp_path / "x" / "supernet_checkpoint.pt").exists(), "the budget check must precede any work"
    if "nonexistent" in message:
        assert not (tmp_path / "x").exists(), "a bad --data must be refused before any folder is written"
        assert "plan:" not in captured.out  # before the start line


def test_bad_input_in_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    proc = run_cli([*SMOKE, "--run-dir", str(tmp_path / "x"), "--set", "supernet.nope=1"], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unknown setting 'supernet.nope'" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    # lr 1e30 makes the loss overflow within a few steps of the first epoch
    proc = run_cli(
        [*SMOKE, "--run-dir", str(out), "--set", "supernet.lr=1e30", "--set", "supernet.epochs=3"], check=False
    )
    assert proc.returncode == 2  # a failed run the user can fix, recorded in its folder
    assert "loss became" in proc.stderr and "last good checkpoint" in proc.stderr
    assert "loss became" in read_json(out / "error.json")["error"]
    assert not (out / "final.json").exists()


def test_more_retraining_seeds_extend_a_finished_run(uninterrupted, tmp_path):
    """retrain.seeds added to a finished run retrains its architecture again; a fresh run with them agrees."""
    import shutil

    extended = tmp_path / "extended"
    shutil.copytree(uninterrupted, extended)
    run_cli([*SMOKE, "--run-dir", str(extended), "--set", "retrain.seeds=2"])
    before, after = read_json(uninterrupted / "final.json"), read_json(extended / "final.json")
    seeds = after["retrain_seeds"]
    assert [s["index"] for s in seeds] == [0, 1]
    assert seeds[0]["top1"] == before["top1"]  # the run's own retraining is kept, not redone
    assert after["top1"] == round((seeds[0]["top1"] + seeds[1]["top1"]) / 2, 4)
    stages = [r["stage"] for r in read_jsonl(extended / "train_log.jsonl")]
    assert stages.count("retrain1") == stages.count("retrain") >= 1
    fresh = tmp_path / "fresh"
    run_cli([*SMOKE, "--run-dir", str(fresh), "--set", "retrain.seeds=2"])
    assert final_metrics(fresh) == final_metrics(extended)
    assert read_json(fresh / "final.json")["retrain_seeds"][1]["top1"] == seeds[1]["top1"]
