"""Resume safety: a run folder is continued (or its result returned) only under the settings it was made with."""

import shutil

import pytest

from benchmark.run import main as run_main
from ennas.core.io import read_json, write_json
from ennas.core.resume import differences

SMOKE = ["--method", "spos", "--space", "s1", "--preset", "smoke", "--set", "supernet.checkpoint_steps=2"]


def test_differences_name_nested_settings_and_ignore_free_ones_and_the_environment():
    stored = {"seed": 0, "supernet": {"lr": 0.1, "epochs": 2}, "threads": 1, "environment": {"torch": "2.14.1"}}
    requested = {"seed": 0, "supernet": {"lr": 0.2, "epochs": 2}, "threads": 2, "progress": False, "new": 1}
    found = differences(stored, requested)
    assert [(k, a, b) for k, a, b in found if k == "supernet.lr"] == [("supernet.lr", 0.1, 0.2)]
    assert [k for k, _, _ in found] == ["new", "supernet.lr"]  # threads, progress and the environment are free


@pytest.fixture
def done_run(smoke_run, tmp_path):
    """A copy of the finished spos smoke run."""
    out = tmp_path / "run"
    shutil.copytree(smoke_run("spos"), out)
    return out


def test_a_changed_setting_is_refused_with_its_values_and_nothing_is_written(done_run, capsys):
    before = {p.name: p.read_bytes() for p in done_run.iterdir() if p.is_file()}
    assert run_main([*SMOKE, "--run-dir", str(done_run), "--set", "supernet.lr=0.2", "--set", "threads=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {done_run} was made with other settings")
    assert "supernet.lr 0.1 there, 0.2 now" in err and "--fresh" in err
    assert {p.name: p.read_bytes() for p in done_run.iterdir() if p.is_file()} == before  # config.json too


def test_unchanged_or_free_settings_resume_and_return_the_stored_result(done_run, capsys):
    final = read_json(done_run / "final.json")
    assert run_main([*SMOKE, "--run-dir", str(done_run), "--set", "threads=2", "--set", "progress=true"]) == 0
    assert read_json(done_run / "final.json") == final
    assert "1 done" in capsys.readouterr().out


def test_a_partial_run_with_other_settings_is_refused_too(done_run, capsys):
    for name in ("final.json", "retrained.pt", "retrain_checkpoint.pt"):
        (done_run / name).unlink(missing_ok=True)  # retrain_checkpoint.pt: removed when the run completed
    cfg = read_json(done_run / "config.json")
    cfg["retrain"]["epochs"] = 1  # as if it had been started with --set retrain.epochs=1
    write_json(done_run / "config.json", cfg)
    assert run_main([*SMOKE, "--run-dir", str(done_run), "--set", "threads=1"]) == 2
    assert "retrain.epochs 1 there, 3 now" in capsys.readouterr().err


def test_fresh_discards_the_folder_and_runs_again(done_run, tmp_path, capsys):
    stale = done_run / "stale.txt"
    stale.write_text("from the old run")
    assert (
        run_main([*SMOKE, "--run-dir", str(done_run), "--set", "supernet.lr=0.2", "--set", "threads=1", "--fresh"]) == 0
    )
    assert not stale.exists() and read_json(done_run / "config.json")["supernet"]["lr"] == 0.2
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not a run")
    assert run_main([*SMOKE, "--run-dir", str(foreign), "--fresh"]) == 2
    assert "not a run folder; not removed" in capsys.readouterr().err and (foreign / "mine.txt").exists()


def test_a_setting_added_after_the_run_was_made_counts_as_its_default():
    stored = {"seed": 0, "supernet": {"lr": 0.1}}  # made before supernet.accumulate and amp existed
    assert differences(stored, {"seed": 0, "supernet": {"lr": 0.1, "accumulate": 1}, "amp": "auto"}) == []
    found = differences(stored, {"seed": 0, "supernet": {"lr": 0.1, "accumulate": 2}})
    assert found == [("supernet.accumulate", 1, 2)]


def test_checkpoints_are_removed_when_a_run_completes_unless_kept(done_run, capsys):
    kept = sorted(p.name for p in done_run.glob("*_checkpoint.pt"))  # the fixture's run keeps them
    assert kept == ["retrain_checkpoint.pt", "supernet_checkpoint.pt"]
    final = read_json(done_run / "final.json")
    assert run_main([*SMOKE, "--set", "threads=1", "--keep-checkpoints", "--run-dir", str(done_run)]) == 0
    assert sorted(p.name for p in done_run.glob("*_checkpoint.pt")) == kept
    assert run_main([*SMOKE, "--set", "threads=1", "--run-dir", str(done_run)]) == 0  # keeping them changes no result
    assert not list(done_run.glob("*_checkpoint.pt")) and (done_run / "supernet.pt").exists()
    assert read_json(done_run / "final.json") == final
