"""benchmark.groundtruth and benchmark.fidelity on smoke-sized runs: rows, sidecar, resume, refusals, ranking.csv."""

import csv
import json
import shutil

import pandas as pd
import pytest
import torch

import benchmark.groundtruth as gt
import ennas.core.checkpoint
import ennas.core.loop
from benchmark.fidelity import main as fidelity_main
from benchmark.fidelity import ranking_for_run
from benchmark.preset import load_preset
from benchmark.ranking import load_groundtruth
from benchmark.run import main as run_main
from ennas.core.io import load_torch, read_json, read_jsonl

# Two epochs of two steps, so an interrupted training can resume from its epoch checkpoint.
TINY = ["--space", "s1", "--set", "retrain.epochs=2", "--set", "retrain.max_steps_per_epoch=2", "--set", "threads=1"]


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> str:
    """The smoke preset on synthetic data: evaluating Fashion-MNIST's 10,000 test images would take most of a test."""
    values = load_preset("smoke")
    values["data"] = {
        "dataset": "synthetic",
        "options": {"n_train": 768, "n_test": 128},
        "train_size": 512,
        "search_size": 256,
        "recal_size": 128,
    }
    path = tmp_path_factory.mktemp("preset") / "tiny.json"
    path.write_text(json.dumps(values))
    return str(path)


def args(preset, root, *extra):
    """Ground-truth arguments writing into `root` (gt.csv, work/)."""
    return ["--preset", preset, "--out", str(root / "gt.csv"), "--work", str(root / "work"), *TINY, *extra]


def comparable(path):
    """A ground truth's rows without the timings, which differ between runs."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in gt.read_rows(path)]


@pytest.fixture(scope="module")
def truth(preset, tmp_path_factory):
    """An uninterrupted ground truth of 3 drawn architectures x 2 seeds."""
    root = tmp_path_factory.mktemp("truth")
    assert gt.main(args(preset, root, "--archs", "3", "--seeds-per-arch", "2")) == 0
    return root


def test_rows_and_sidecar(truth):
    df = load_groundtruth(truth / "gt.csv")
    assert tuple(df.columns) == gt.COLUMNS and len(df) == 6
    assert sorted(df["seed"].unique()) == [0, 1] and df["arch"].nunique() == 3
    made = read_json(truth / "gt.csv.json")
    low, high = made["band_mflops"]
    assert low == pytest.approx(0.75 * made["budget_mflops"]) and high == pytest.approx(made["budget_mflops"])
    assert df["mflops"].between(low, high).all() and (df["params"] > 0).all()
    assert df["test_top1"].between(0, 100).all() and df["search_top1"].between(0, 100).all()
    assert made["preset"] == "tiny" and made["recipe"]["epochs"] == 2 and made["arch_seed"] == gt.ARCH_SEED
    assert made["archs"] == list(df["arch"].iloc[:3]) and len(made["commands"]) == 1
    first = gt.read_rows(truth / "gt.csv")[0]
    assert len(first["test_top1"].split(".")[1]) == 4 and len(first["mflops"].split(".")[1]) == 6  # fixed format


def test_rerun_adds_nothing_and_trains_nothing(truth, preset, monkeypatch):
    before = (truth / "gt.csv").read_bytes()

    def refuse(*a, **k):
        raise AssertionError("a finished (arch, seed) was trained again")

    monkeypatch.setattr(gt, "train_one", refuse)
    assert gt.main(args(preset, truth, "--archs", "3", "--seeds-per-arch", "2")) == 0
    assert (truth / "gt.csv").read_bytes() == before


class Stop(Exception):
    """Stands for a kill: raised where the process would have died."""


def test_resume_after_interrupt_matches_uninterrupted(truth, preset, tmp_path, monkeypatch):
    save, steps = ennas.core.checkpoint.save, []

    def save_then_stop(ctx, loop, epoch, step, sums):
        save(ctx, loop, epoch, step, sums)
        # The second training, after its first epoch's checkpoint: one row written, one training half done.
        if (tmp_path / "gt.csv").exists() and epoch == 1:
            raise Stop

    monkeypatch.setattr(ennas.core.checkpoint, "save", save_then_stop)
    with pytest.raises(Stop):
        gt.main(args(preset, tmp_path, "--archs", "2", "--seeds-per-arch", "1"))
    assert len(gt.read_rows(tmp_path / "gt.csv")) == 1
    monkeypatch.setattr(ennas.core.checkpoint, "save", save)
    train_step = ennas.core.loop.train_step
    monkeypatch.setattr(ennas.core.loop, "train_step", lambda *a: steps.append(1) or train_step(*a))
    assert gt.main(args(preset, tmp_path, "--archs", "2", "--seeds-per-arch", "1")) == 0
    assert len(steps) == 2  # only the interrupted training's second epoch
    # The first 2 of the 3 drawn architectures, seed 0: the same figures as the uninterrupted run.
    assert comparable(tmp_path / "gt.csv") == comparable(truth / "gt.csv")[:2]


def test_two_jobs_give_the_same_rows(truth, preset, tmp_path):
    assert gt.main(args(preset, tmp_path, "--archs", "2", "--seeds-per-arch", "1", "--jobs", "2")) == 0
    assert comparable(tmp_path / "gt.csv") == comparable(truth / "gt.csv")[:2]


def test_bad_input_is_one_line_and_exit_2(truth, preset, tmp_path, capsys):
    row = gt.read_rows(truth / "gt.csv")[0]
    outside = f"{float(row['mflops']) + 1},{float(row['mflops']) + 2}"
    cases = [
        (["--arch", row["arch"], "--band", outside], "outside the band"),
        (["--band", "7"], "--band takes LOW,HIGH"),
        (["--band", "7,5"], "LOW < HIGH"),
        (["--space", "nope"], "unknown search space"),
        (["--preset", "nope"], "unknown preset"),
        (["--seeds", "2"], "is --seeds-per-arch"),  # one meaning per word: --seeds names seeds in benchmark.run
    ]
    for extra, message in cases:
        assert gt.main(args(preset, tmp_path, *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "gt.csv").exists() and not (tmp_path / "gt.csv.json").exists()


def test_a_different_recipe_band_or_layout_is_not_mixed_in(truth, preset, capsys, monkeypatch):
    before = (truth / "gt.csv").read_bytes()
    with monkeypatch.context() as m:  # as if spaces/registry.py had changed the proxy layout since
        m.setattr(gt, "layout_digest", lambda space: "another-layout")
        assert gt.main(args(preset, truth, "--archs", "3")) == 2
    assert "was made with layout" in capsys.readouterr().err
    assert gt.main(args(preset, truth, "--archs", "3", "--set", "retrain.lr=0.5")) == 2
    assert "was made with recipe" in capsys.readouterr().err
    assert gt.main(args(preset, truth, "--archs", "3", "--band", "1,20")) == 2
    assert "was made with band_mflops" in capsys.readouterr().err
    assert (truth / "gt.csv").read_bytes() == before


def test_ranking_for_run_per_epoch_and_memoised(truth, preset, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    no_random = ["--set", "search.random_baseline=false"]  # the search's baseline is not what is tested here
    snapshot = ["--set", "supernet.snapshot_epochs=[0]"]  # the supernet stage keeps its epoch-0 weights
    assert run_main(["--method", "spos", "--preset", preset, "--run-dir", str(run), *TINY, *no_random, *snapshot]) == 0
    first = load_torch(run / "snapshots" / "supernet_epoch0.pt")
    final = load_torch(run / "supernet.pt")["model"]
    assert first["epoch"] == 0 and first["model"].keys() == final.keys()
    assert any(not torch.equal(first["model"][k], final[k]) for k in final)  # epoch 1 trained on from it
    assert not (run / "snapshots" / "supernet_epoch1.pt").exists()  # only the chosen epochs
    rows = ranking_for_run(run, truth / "gt.csv")
    last = read_json(run / "config.json")["supernet"]["epochs"] - 1
    assert [(r["epoch"], r["predictor"]) for r in rows] == [
        (e, p) for e in (0, last) for p in ("supernet", "flops", "params", "ceiling")
    ]
    assert all(r["n"] == 3 for r in rows)
    header = (run / "ranking.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["epoch", "predictor"] and "kendall_tau" in header
    memo = read_jsonl(run / "ranking_scores.jsonl")
    assert len(memo) == 2 * 3 and {m["weights"] for m in memo} == {"snapshots/supernet_epoch0.pt", "supernet.pt"}

    def refuse(*a, **k):
        raise AssertionError("a memoised score was computed again")

    monkeypatch.setattr("ennas.core.method.score_path", refuse)
    csv_before = (run / "ranking.csv").read_text()
    assert fidelity_main([str(run), "--groundtruth", str(truth / "gt.csv")]) == 0
    assert (run / "ranking.csv").read_text() == csv_before
    assert "| supernet |" in capsys.readouterr().out
    shutil.rmtree(run / "snapshots")
    assert fidelity_main([str(run), "--groundtruth", str(truth / "gt.csv"), "--epochs", "last"]) == 0
    with (run / "ranking.csv").open() as f:
        assert {r["epoch"] for r in csv.DictReader(f)} == {str(last)}


def test_fidelity_ranks_dna_with_its_own_scorer_the_summed_block_ratings(smoke_run, tmp_path):
    """DNA's search scores candidates by -(summed block ratings): ranking_for_run scores the ground truth the
    same way, so an architecture its search scored gets the very score the search logged."""
    run = tmp_path / "dna-run"
    shutil.copytree(smoke_run("dna"), run)
    searched = {r["arch"]: r["score"] for r in read_jsonl(run / "search.jsonl")}
    archs = sorted(searched)[:3]
    rows = [
        {
            "arch": a,
            "seed": s,
            "test_top1": 80.0 + i + s / 10,
            "search_top1": 80.0,
            "mflops": 1.0,
            "params": 1,
            "seconds": 1.0,
        }
        for i, a in enumerate(archs)
        for s in (0, 1)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "gt.csv", index=False)
    found = ranking_for_run(run, tmp_path / "gt.csv", epochs="last")
    memo = {m["arch"]: m["score"] for m in read_jsonl(run / "ranking_scores.jsonl")}
    assert memo == {a: searched[a] for a in archs}
    assert {r["predictor"] for r in found} >= {"supernet", "flops", "ceiling"}


def test_a_record_made_before_a_setting_existed_is_continued(truth, preset, tmp_path, monkeypatch, capsys):
    """Settings added to the suite later (retrain.accumulate, data.decode) count as their defaults, so a ground
    truth computed over several sessions survives the upgrade; a non-default value of one is still refused."""
    root = tmp_path / "old"
    shutil.copytree(truth, root)
    for record in (root / "gt.csv.json", root / "work" / "groundtruth.json"):
        made = read_json(record)
        del made["recipe"]["accumulate"], made["data"]["decode"]
        record.write_text(json.dumps(made))
    before = (root / "gt.csv").read_bytes()
    monkeypatch.setattr(gt, "train_one", lambda *a: pytest.fail("a finished (arch, seed) was trained again"))
    assert gt.main(args(preset, root, "--archs", "3", "--seeds-per-arch", "2")) == 0
    assert (root / "gt.csv").read_bytes() == before
    assert gt.main(args(preset, root, "--archs", "3", "--set", "retrain.accumulate=2")) == 2
    assert "was made with recipe.accumulate = 1, not 2" in capsys.readouterr().err
