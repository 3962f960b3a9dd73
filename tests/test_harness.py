"""The benchmark harness: plan parsing, naming and status, and `benchmark.run` over a plan (report, skipping
finished runs, a failed run, ranking, --jobs 2 against --jobs 1, --run-dir)."""

import contextlib
import io
import os
import shutil

import pytest
from helpers import preset_config

from benchmark import harness
from benchmark.methods import METHODS
from benchmark.preset import load_preset
from benchmark.results import FOLDER, collect_runs
from benchmark.run import main as run_main
from ennas.core.config import ConfigError
from ennas.core.io import read_json, read_jsonl, write_json

SMOKE = ["--preset", "smoke", "--set", "threads=1"]
RESULT_KEYS = ("arch", "top1", "top5", "flops", "params", "search_score")


# --- parsing and planning ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,seeds",
    [("0", [0]), ("0-2", [0, 1, 2]), ("0,3", [0, 3]), ("0,2,5-6", [0, 2, 5, 6]), ("3,1-3", [3, 1, 2]), (" 4 ", [4])],
)
def test_seed_lists_and_ranges(text, seeds):
    assert harness.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "2-1", "-1", "0-", "1.5", "0,,1", "0-2-3"])
def test_bad_seeds_raise(text):
    with pytest.raises(ConfigError, match="--seeds"):
        harness.parse_seeds(text)


def test_method_labels():
    assert harness.parse_labels("all") == [*sorted(METHODS), "ennas-beta0"]
    assert harness.parse_labels("spos, cream,spos") == ["spos", "cream"]
    assert harness.parse_labels("ennas-beta0") == ["ennas-beta0"]
    for bad in ("nope", "spos,nope", ",", ""):
        with pytest.raises(ConfigError, match="unknown method") as err:
            harness.parse_labels(bad)
        assert all(name in str(err.value) for name in [*METHODS, "ennas-beta0", "all"])


def test_spaces():
    assert harness.parse_spaces("all") == ["s1", "s2", "s3"]
    assert harness.parse_spaces("s2,s1,s2") == ["s2", "s1"]
    with pytest.raises(
        ConfigError, match="unknown search space 's9'; known: cream, dna, dna_w96_160, dna_w96_192, s1, s2, s3, spos"
    ):
        harness.parse_spaces("s9")


def test_plan_names_order_and_plan_json(tmp_path):
    runs = harness.plan_runs(["spos", "ennas-beta0"], ["s1", "s2"], [0, 1])
    assert [r.name for r in runs[:4]] == [
        "spos-s1-seed0",
        "ennas-beta0-s1-seed0",
        "spos-s1-seed1",
        "ennas-beta0-s1-seed1",
    ]
    assert [r.space for r in runs] == ["s1"] * 4 + ["s2"] * 4
    beta0 = runs[1]
    assert (beta0.label, beta0.method, beta0.overrides) == ("ennas-beta0", "ennas", {"ennas": {"beta": 0.0}})
    assert all(FOLDER.fullmatch(r.name)["label"] == r.label for r in runs), "the report parses the folder names"
    harness.write_plan(tmp_path, "smoke", runs[:2])
    harness.write_plan(tmp_path, "smoke", runs[2:3])  # a later call adds its runs
    plan = read_json(tmp_path / "plan.json")
    assert plan["preset"] == "smoke"
    assert plan["runs"] == [
        {"label": "spos", "method": "spos", "space": "s1", "seed": 0, "overrides": {}},
        {"label": "ennas-beta0", "method": "ennas", "space": "s1", "seed": 0, "overrides": {"ennas": {"beta": 0.0}}},
        {"label": "spos", "method": "spos", "space": "s1", "seed": 1, "overrides": {}},
    ]
    assert set(collect_runs(tmp_path)["status"]) == {"missing"}  # what the report makes of planned runs


def test_a_variant_config_and_the_user_override_winning():
    run = harness.plan_runs(["ennas-beta0"], ["s1"], [2])[0]
    cfg = harness.run_config(load_preset("smoke"), {}, run)
    assert (cfg.method, cfg.space, cfg.seed, cfg.options("ennas").beta) == ("ennas", "s1", 2, 0.0)
    assert preset_config("smoke", method="ennas").options("ennas").beta > 0, "the control differs from ennas"
    cfg = harness.run_config(load_preset("smoke"), {"ennas": {"beta": "0.5"}, "supernet": {"epochs": "3"}}, run)
    assert (cfg.options("ennas").beta, cfg.supernet.epochs) == (0.5, 3)
    with pytest.raises(ConfigError, match="use --seeds"):
        harness.run_config(load_preset("smoke"), {"seed": "3"}, run)


def test_run_status(tmp_path):
    run = tmp_path / "run"
    assert harness.run_status(run) == "todo"
    run.mkdir()
    assert harness.run_status(run) == "todo"
    write_json(run / "config.json", {})
    assert harness.run_status(run) == "partial"
    write_json(run / "error.json", {"error": "boom"})
    assert harness.run_status(run) == "failed"
    write_json(run / "final.json", {})
    assert harness.run_status(run) == "done"
    assert harness.run_status(run, retrain_seeds=2) == "partial"  # a run made before retrain.seeds: one seed
    write_json(run / "final.json", {"retrain_seeds": [{"index": 0}, {"index": 1}]})
    assert harness.run_status(run, retrain_seeds=2) == "done"
    assert harness.run_status(run, retrain_seeds=3) == "partial"


def test_makespan_of_workers_taking_runs_in_order():
    assert harness.makespan([], 2) == 0.0
    assert harness.makespan([5.0, 4.0, 3.0], 1) == 12.0
    assert harness.makespan([5.0, 4.0, 3.0], 2) == 7.0  # 5 | 4+3
    assert harness.makespan([3.0, 4.0, 5.0], 2) == 8.0  # 3+5 | 4: the order matters
    assert harness.makespan([2.0, 2.0], 8) == 2.0


def test_longest_first_orders_by_measured_label_time_and_keeps_ties_in_plan_order(monkeypatch):
    times = {"ennas-wo-ds": 40.0, "dna": 30.0, "cream": 20.0, "spos": 10.0, "*": 25.0}
    monkeypatch.setitem(harness.RUN_SECONDS, "proxy", times)
    runs = harness.plan_runs(["spos", "dna", "ennas-wo-ds", "cream"], ["s1"], [0, 1])
    ordered = [r.name for r in harness.longest_first(runs, "proxy")]
    assert ordered == [
        "ennas-wo-ds-s1-seed0",
        "ennas-wo-ds-s1-seed1",
        "dna-s1-seed0",
        "dna-s1-seed1",
        "cream-s1-seed0",
        "cream-s1-seed1",
        "spos-s1-seed0",
        "spos-s1-seed1",
    ]
    assert harness.longest_first(runs, "smoke") == runs  # one figure for every label
    assert harness.longest_first(runs, "my-preset.json") == runs  # no figure at all


def test_the_estimate_packs_the_runs_left_longest_first():
    proxy = harness.RUN_SECONDS["proxy"]
    labels = ["spos", "ennas", "ennas"]
    expected = max(proxy["ennas"] + proxy["spos"], proxy["ennas"]) / 60
    assert harness.estimate("proxy", labels, 2).startswith(f"expected about {expected:.0f} min")
    assert harness.estimate("proxy", ["new-variant"], 1).startswith(f"expected about {proxy['*'] / 60:.0f} min")
    assert harness.estimate("proxy", [], 2) == "nothing to run"
    assert harness.estimate("imagenet", ["spos"], 1) == "duration unknown for this preset"
    line = harness.start_line("proxy", ["done", "todo"], 1, 2, "out", ["ennas", "spos"])
    assert f"expected about {proxy['spos'] / 60:.0f} min" in line  # the finished ennas run is not counted


# --- the CLI -------------------------------------------------------------------------------------------
def cli(*args) -> tuple[int, str, str]:
    """benchmark.run in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_main([*args, *SMOKE])
    return rc, out.getvalue(), err.getvalue()


def mtimes(root):
    """Modification times of every file in the run folders under `root`."""
    return {p: p.stat().st_mtime_ns for p in root.glob("*-seed*/**/*") if p.is_file()}


def same_run(a, b) -> None:
    """Two run folders hold the same result: final.json's results, the search's records, the epoch logs."""
    assert {k: read_json(a / "final.json")[k] for k in RESULT_KEYS} == {
        k: read_json(b / "final.json")[k] for k in RESULT_KEYS
    }
    assert read_jsonl(a / "search.jsonl") == read_jsonl(b / "search.jsonl")
    untimed = [
        [{k: v for k, v in r.items() if not k.endswith("_s")} for r in read_jsonl(f / "train_log.jsonl")]
        for f in (a, b)
    ]
    assert untimed[0] == untimed[1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two smoke runs (spos, cream; seed 0) under one root, one after another in this process."""
    root = tmp_path_factory.mktemp("pair") / "runs"
    rc, out, err = cli(
        "--method", "spos,cream", "--seeds", "0", "--out", str(root), "--jobs", "1", "--keep-checkpoints"
    )
    assert rc == 0, err
    return root, out


@pytest.fixture
def copy(pair, tmp_path):
    """A copy of the pair's root, to change without touching the original."""
    shutil.copytree(pair[0], tmp_path / "runs")
    return tmp_path / "runs"


def test_cli_runs_the_plan_into_folders_with_plan_and_report(pair):
    root, out = pair
    assert out.startswith("plan: 2 runs of preset smoke: 0 done, 0 partial, 2 todo; 1 job(s) x 1 thread(s); expected")
    for name in ("spos-s1-seed0", "cream-s1-seed0"):
        assert read_json(root / name / "final.json")["method"] == name.split("-")[0]
        assert not (root / name / "error.json").exists()
    assert [(r["label"], r["seed"]) for r in read_json(root / "plan.json")["runs"]] == [("spos", 0), ("cream", 0)]
    table = (root / "table1.csv").read_text()
    assert "spos" in table and "cream" in table
    assert (root / "REPORT.md").read_text().startswith("# ennas-bench report")
    summary = out[out.index("label  space  seed  status") :].splitlines()
    assert summary[1].split()[:4] == ["spos", "s1", "0", "done"] and summary[1].endswith(str(root / "spos-s1-seed0"))
    assert summary[2].split()[:4] == ["cream", "s1", "0", "done"]


def test_rerun_skips_finished_runs(pair):
    root, _ = pair
    before = mtimes(root)
    rc, out, err = cli("--method", "spos,cream", "--out", str(root), "--keep-checkpoints")  # the module's runs
    assert rc == 0, err
    assert out.startswith("plan: 2 runs of preset smoke: 2 done, 0 partial, 0 todo; 1 job(s) x 1 thread(s); nothing")
    assert "top-1" not in out and out.count(" earlier ") == 2, "nothing ran again"
    assert mtimes(root) == before


def test_a_failed_run_leaves_error_json_and_the_others_go_on(copy):
    cream = copy / "cream-s1-seed0"
    for name in ("final.json", "retrained.pt"):  # unfinished: it resumes its retraining from the checkpoint...
        (cream / name).unlink()
    checkpoint = cream / "retrain_checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # ...which is truncated
    spos_final = (copy / "spos-s1-seed0" / "final.json").read_text()
    rc, out, err = cli("--method", "spos,cream", "--out", str(copy))
    assert rc == 2  # a failure the user can fix (the line says how)
    error = read_json(cream / "error.json")
    assert str(checkpoint) in error["error"] and "\n" not in error["error"]
    assert error["type"] == "CheckpointError" and error["time"]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cream-s1-seed0 failed" in lines[0] and str(checkpoint) in lines[0]
    failed = next(line for line in out.splitlines() if line.startswith("cream "))
    assert failed.split()[3] == "failed" and str(cream) in failed and error["error"] in failed
    assert (copy / "spos-s1-seed0" / "final.json").read_text() == spos_final
    runs = collect_runs(copy).set_index("label")  # as the report reads them
    assert runs.loc["cream", "status"] == "failed" and runs.loc["cream", "error"] == error["error"]
    assert runs.loc["spos", "status"] == "ok"
    # As the error says: without the bad checkpoint it retrains, finishes, and the stale error.json goes.
    checkpoint.unlink()
    rc, out, err = cli("--method", "spos,cream", "--out", str(copy))
    assert rc == 0, err
    assert ", 1 failed before," in out.splitlines()[0]
    assert (cream / "final.json").exists() and not (cream / "error.json").exists()


def test_ranking_per_done_run_where_a_ground_truth_exists(copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results/<preset>/ is looked up from the working folder
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "smoke" / "groundtruth_s1.csv").write_text("arch,seed,test_top1\n")
    calls = []

    def fake_ranking(run_dir, csv):
        calls.append(run_dir.name)
        if run_dir.name.startswith("cream"):
            raise ValueError("no architectures in common\nsecond line")
        (run_dir / "ranking.csv").write_text("epoch,predictor\n")

    monkeypatch.setattr("benchmark.fidelity.ranking_for_run", fake_ranking)
    rc, out, err = cli("--method", "spos,cream", "--out", str(copy))
    assert rc == 0, "a failed ranking is a warning, not a failed run"
    assert calls == ["spos-s1-seed0", "cream-s1-seed0"]
    assert "warning: ranking of" in err and "no architectures in common" in err and "second line" not in err
    calls.clear()
    assert cli("--method", "spos,cream", "--out", str(copy))[0] == 0
    assert calls == ["cream-s1-seed0"], "a run with ranking.csv is not scored again"
    calls.clear()
    truth = tmp_path / "results" / "smoke" / "groundtruth_s1.csv"
    later = (copy / "spos-s1-seed0" / "ranking.csv").stat().st_mtime + 10
    os.utime(truth, (later, later))  # the ground truth grew after the ranking was scored
    assert cli("--method", "spos,cream", "--out", str(copy))[0] == 0
    assert calls == ["spos-s1-seed0", "cream-s1-seed0"], "a ranking older than its ground truth is scored again"


def test_a_failing_report_keeps_the_summary_and_exits_1(copy, monkeypatch):
    def broken(out):
        raise KeyError("table1")

    monkeypatch.setattr("benchmark.report.build_report", broken)
    rc, out, err = cli("--method", "spos", "--out", str(copy))
    assert rc == 1
    assert "label  space  seed  status" in out
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: the report of {copy} failed: 'table1' (python -m benchmark.report {copy})"
    ]


def test_jobs_2_gives_the_results_of_jobs_1(pair, tmp_path):
    """The pair again, in two spawned workers at once: the same results as one after another in this process."""
    rc, out, err = cli("--method", "spos,cream", "--seeds", "0", "--out", str(tmp_path / "two"), "--jobs", "2")
    assert rc == 0, err
    assert "2 job(s) x 1 thread(s)" in out.splitlines()[0]
    for name in ("spos-s1-seed0", "cream-s1-seed0"):
        same_run(tmp_path / "two" / name, pair[0] / name)


def test_workers_take_the_longest_runs_first_and_one_job_keeps_the_plan_order(tmp_path, monkeypatch):
    started = []

    def record(tasks, jobs, preset, debug):
        started.append([t.run.label for t in tasks])
        return iter(())  # nothing runs: the order is what is tested

    monkeypatch.setattr("benchmark.execute.run_tasks", record)
    monkeypatch.setitem(harness.RUN_SECONDS, "smoke", {"dna": 30.0, "cream": 20.0, "*": 10.0})
    for jobs in ("2", "1"):
        cli("--method", "spos,cream,dna", "--out", str(tmp_path / jobs), "--jobs", jobs)
    assert started == [["dna", "cream", "spos"], ["spos", "cream", "dna"]]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "spos,cream"], "error: --run-dir is one run's folder; it does not go with a plan of 2 runs"),
        (
            ["--method", "spos", "--seeds", "0-1"],
            "error: --run-dir is one run's folder; it does not go with a plan of 2",
        ),
        (["--method", "spos", "--out", "elsewhere"], "error: --run-dir is one run's folder; it does not go with --out"),
        (["--method", "spos", "--seeds", "1-0"], "error: --seeds range '1-0'"),
        (["--method", "spos", "--jobs", "0"], "error: --jobs must be >= 1"),
    ],
)
def test_bad_plans_are_one_line_errors(tmp_path, args, message):
    rc, out, err = cli(*args, "--run-dir", str(tmp_path / "x"))
    assert rc == 2 and err.splitlines() == [err.strip()] and err.startswith(message), err
    assert not (tmp_path / "x").exists() and not out


def test_a_short_plan_is_estimated_in_seconds_not_zero_minutes():
    assert harness.estimate("smoke", ["spos"], 1) == "expected about 20 s (0.3 run-minutes measured on 2 cores)"
    assert harness.estimate("imagenet", ["spos"], 1) == "duration unknown for this preset"
