"""--launcher local|slurm: each run a submitit job that stops at its safe point and is requeued on submitit's
signal, never two jobs for one folder, every setting checked before anything is submitted, and the commands of
docs/cluster.md (their SLURM form against a fake SLURM, their local form on submitit's local executor)."""

import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import torch
from conftest import SMOKE_ARGS
from test_preempt import same_training

from benchmark import slurm
from benchmark.preset import load_preset
from benchmark.run import main as run_main
from benchmark.slurm_job import LOCK, RunJob, export_torch_env, write_lock
from ennas.core.io import read_json

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "cluster.md"


def cli(*args) -> tuple[int, str, str]:
    """benchmark.run in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_main(list(args))
    return rc, out.getvalue(), err.getvalue()


class FakeSlurm:
    """sbatch, srun and squeue on PATH: sbatch keeps each script and answers job 4242, 4243, ...; squeue shows
    every job as pending while `alive` allows, then as unknown (ended)."""

    def __init__(self, root: Path) -> None:
        self.root, self.bin = root, root / "bin"
        self.bin.mkdir(parents=True)
        (root / "next_id").write_text("4242")
        self.write("sbatch", 'n=$(cat {root}/next_id); cp "$1" {root}/script_$n.sh; echo $((n + 1)) > {root}/next_id\n'
                   'echo "Submitted batch job $n"')  # fmt: skip
        self.write("srun", "exit 1")
        self.write("squeue", 'echo "$@" >> {root}/squeue.log\nn=$(cat {root}/alive 2>/dev/null || echo 0)\n'
                   'if [ "$n" = always ]; then echo PENDING; exit 0; fi\n'
                   'if [ "$n" -gt 0 ]; then echo $((n - 1)) > {root}/alive; echo PENDING; exit 0; fi\n'
                   'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')  # fmt: skip

    def write(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body.format(root=shlex.quote(str(self.root))) + "\n")
        path.chmod(0o755)

    def alive(self, answers: int | str) -> None:
        """squeue shows every job as pending for the next `answers` calls ("always": from now on), then as gone."""
        (self.root / "alive").write_text(f"{answers}\n")

    def scripts(self) -> list[str]:
        return [p.read_text() for p in sorted(self.root.glob("script_*.sh"))]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    slurm = FakeSlurm(tmp_path / "slurm")
    monkeypatch.setenv("PATH", f"{slurm.bin}{os.pathsep}{os.environ['PATH']}")
    return slurm


# --- settings -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--launcher", "slurm", "--time", "0"], "--time must be >= 1, got '0'"),
        (["--launcher", "slurm", "--time", "2", "--signal-delay-s", "120"], "must be shorter than --time 2"),
        (["--launcher", "slurm", "--gpus-per-node", "1.5"], "--gpus-per-node takes a whole number, got '1.5'"),
        (["--launcher", "slurm", "--mem-gb", "lots"], "--mem-gb takes a number, got 'lots'"),
        (["--launcher", "slurm", "--partition", "gpu;rm"], "--partition takes a partition name"),
        (["--launcher", "slurm", "--jobs", "2"], "--jobs: runs at once on this machine"),
        (["--launcher", "local", "--nodes", "2"], "--nodes: SLURM only"),
        (["--partition", "gpu", "--wait"], "--partition, --wait: only with --launcher local or slurm"),
    ],
)
def test_a_bad_setting_is_one_line_before_anything_is_submitted(fake_slurm, tmp_path, args, message):
    out = tmp_path / "runs"
    rc, stdout, err = cli("--method", "spos", "--preset", "smoke", "--out", str(out), *args)
    assert rc == 2 and stdout == "", err
    assert err.splitlines() == [err.strip()] and err.startswith("error: ") and message in err, err
    assert not out.exists() and fake_slurm.scripts() == []


def test_a_bad_preset_section_and_a_missing_sbatch_are_one_line(tmp_path):
    preset = tmp_path / "cluster.json"
    preset.write_text(json.dumps({**load_preset("smoke"), "slurm": {"partition": "gpu", "qos": "high"}}))
    rc, _, err = cli("--method", "spos", "--preset", str(preset), "--out", str(tmp_path / "a"), "--launcher", "slurm")
    assert rc == 2 and err.count("\n") == 1 and "the preset's slurm section: unknown qos; known: partition, time" in err
    rc, _, err = cli("--method", "spos", "--preset", "smoke", "--out", str(tmp_path / "b"), "--launcher", "slurm")
    assert rc == 2 and err == "error: --launcher slurm needs SLURM's sbatch and srun on PATH: run it on the " \
        "cluster's login node\n"  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- SLURM: one array, locks ---------------------------------------------------------------------------------------
def sbatch_lines(script: str) -> dict[str, str]:
    """An sbatch script's `#SBATCH --key=value` lines as {key: value}."""
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, flags=re.M))


def test_the_plan_goes_to_slurm_as_one_array_and_a_queued_run_is_never_submitted_twice(fake_slurm, tmp_path):
    preset, out = tmp_path / "cluster.json", tmp_path / "runs"
    section = {"partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 4, "time": 60}
    preset.write_text(json.dumps({**load_preset("smoke"), "slurm": section}))
    args = ["--method", "spos,ennas", "--preset", str(preset), "--out", str(out), "--launcher", "slurm"]
    args += ["--time", "90", "--mem-gb", "8", "--array-parallelism", "1"]  # flags win over the preset's section
    rc, stdout, err = cli(*args)
    assert rc == 0, err
    assert "2 run(s) of preset cluster: 0 done, 0 queued or running, 2 to submit (slurm)" in stdout
    assert "spos-s1-seed0: job 4242_0" in stdout and "ennas-s1-seed0: job 4242_1" in stdout
    [script] = fake_slurm.scripts()  # one sbatch call: the array
    flags = sbatch_lines(script)
    assert flags["array"] == "0-1%1" and flags["partition"] == "gpu" and flags["time"] == "90"
    assert flags["nodes"] == "1" and flags["ntasks-per-node"] == "2" and flags["gpus-per-node"] == "2"
    assert flags["cpus-per-task"] == "4" and flags["mem"] == "8192MB" and flags["signal"] == "USR2@120"
    assert "srun" in script and "submitit.core._submit" in script
    for index, name in enumerate(["spos-s1-seed0", "ennas-s1-seed0"]):
        assert read_json(out / name / LOCK)["job"] == f"4242_{index}"
        job = submitit.helpers.DelayedSubmission.load(
            out / "submitit" / f"4242_{index}" / f"4242_{index}_submitted.pkl"
        )
        assert isinstance(job.function, RunJob) and job.function.task.folder == out / name
        assert job.function.task.threads == 4  # the task's own CPUs
        assert job.function.checkpoint().function == job.function  # a requeue resubmits the same run
    assert read_json(out / "plan.json")["preset"] == "cluster"
    fake_slurm.alive("always")  # both still queued: nothing is submitted again
    rc, stdout, _ = cli(*args)
    assert rc == 0 and "0 done, 2 queued or running, 0 to submit" in stdout and len(fake_slurm.scripts()) == 1
    rc, _, err = cli(*args, "--fresh")
    assert rc == 2 and "--fresh: spos-s1-seed0 (job 4242_0), ennas-s1-seed0 (job 4242_1) still queued" in err
    fake_slurm.alive(0)  # SLURM forgot them (ended without a result): their stale locks block nothing
    rc, stdout, _ = cli(*args)
    assert rc == 0 and "2 to submit" in stdout and "spos-s1-seed0: job 4243_0" in stdout
    assert "--array --jobs 4242_0 --format=%T" in (fake_slurm.root / "squeue.log").read_text()


def test_a_job_of_several_tasks_gets_torchruns_variables_from_submitits_environment(monkeypatch):
    names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    for name in names:  # recorded, so that the teardown removes what export sets
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert not export_torch_env(submitit.JobEnvironment()) and "RANK" not in os.environ  # one task: no group
    two_nodes = {"SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_PROCID": "9"}
    for key, value in {**two_nodes, "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[3-4]"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    assert export_torch_env(submitit.JobEnvironment())
    got = {name: os.environ[name] for name in names}
    assert {k: v for k, v in got.items() if k != "MASTER_PORT"} == {
        "MASTER_ADDR": "gpu3",
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
    }
    assert 20000 <= int(got["MASTER_PORT"]) <= 60000
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"  # each rank takes cuda:LOCAL_RANK of all


@pytest.mark.parametrize(("visible", "count", "gpus"), [(None, 2, ("0", "1")), ("2,3", 2, ("2", "3")), (None, 0, ())])
def test_runs_on_this_machine_take_the_gpus_the_submitting_command_sees(monkeypatch, visible, count, gpus):
    """Local job i runs on entry i mod count of these (as `--jobs` worker i), whatever the controller sets."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert slurm._gpus() == gpus


def test_a_job_whose_folder_another_live_job_holds_does_not_run(tmp_path):
    """Never two jobs for one folder, checked by the job itself (here on submitit's debug executor, in process)."""
    from benchmark.run import parse_args, plan_tasks

    run = tmp_path / "run"
    [task], _, _ = plan_tasks(parse_args(["--method", "spos", "--preset", "smoke", "--run-dir", str(run)]))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])  # a local job
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    try:
        write_lock(run, str(other.pid), "local")
        job = submitit.DebugExecutor(tmp_path / "logs").submit(RunJob(task, "smoke", "slurm", 1, tmp_path / "logs"))
        row = job.result()
    finally:
        other.kill()
        other.wait()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert row["status"] == "failed" and row["error"] == f"{run} is held by job {other.pid}"
    assert sorted(p.name for p in run.iterdir()) == [LOCK]  # untouched: no config.json, no checkpoint
    assert read_json(run / LOCK)["job"] == str(other.pid)


# --- the local executor: preemption, requeue, resume --------------------------------------------------------------
def wait_for(check, what: str, timeout: float = 240.0):
    """Poll `check()` until it returns something true; fail after `timeout` seconds naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lock_of(folder: Path) -> dict | None:
    """The run folder's lock once its job has written its own process into it."""
    with contextlib.suppress(OSError, ValueError):
        lock = read_json(folder / LOCK)
        return lock if lock.get("pid") else None
    return None


def test_a_local_job_stopped_by_submitits_signal_is_requeued_and_ends_as_the_uninterrupted_run(
    smoke_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("ENNAS_WAIT_POLL_S", "0.2")
    run = tmp_path / "run"
    args = ["--method", "spos", *SMOKE_ARGS, "--run-dir", str(run), "--launcher", "local"]
    rc, stdout, err = cli(*args)  # submits and returns
    assert rc == 0 and "spos-s1-seed0: job " in stdout, err
    wait_for(lambda: (run / "supernet_checkpoint.pt").exists(), "the first step checkpoint")
    lock = wait_for(lambda: lock_of(run), "the job's lock")
    os.kill(lock["pid"], signal.SIGUSR2)  # what SLURM sends before the time limit or at preemption
    rc, stdout, err = cli(*args, "--wait")
    assert rc == 0, stdout + err
    assert "1 run(s) of preset smoke: 0 done, 1 queued or running, 0 to submit (local)" in stdout
    assert re.search(r"spos\s+s1\s+0\s+done", stdout) and f"ended (job {lock['job']})" in stdout
    log = (tmp_path / "run.submitit" / f"{lock['job']}_0_log.err").read_text()
    assert "stopped by SIGUSR2" in log and "rerun the same command to resume: requeued" in log, log
    assert read_json(run / LOCK)["job"] == lock["job"]  # the requeued job is the same job
    same_training(run, smoke_run("spos"))
    rc, stdout, _ = cli(*args, "--wait")  # done: nothing to submit, nothing to wait for
    assert rc == 0 and "1 done, 0 queued or running, 0 to submit" in stdout
    assert len(list((tmp_path / "run.submitit").glob("*_submitted.pkl"))) == 1


@pytest.mark.slow
def test_a_two_run_plan_on_the_local_executor_requeues_one_resumes_the_other_and_matches_the_harness(tmp_path):
    """The issue's scenario: a two-run plan submitted; one job gets submitit's signal (requeued, finishes), the
    other SIGTERM (saved and stopped, as scancel); --wait reports the stop, the rerun submits only the stopped run,
    and both end as the in-process harness's runs."""
    root, reference = tmp_path / "jobs", tmp_path / "inprocess"
    plan = ["--method", "spos", "--seeds", "0-1", *SMOKE_ARGS, "--jobs", "1"]
    assert cli(*plan, "--out", str(reference))[0] == 0
    args = [*plan, "--out", str(root), "--launcher", "local"]
    os.environ["ENNAS_WAIT_POLL_S"] = "0.2"
    try:
        assert cli(*args)[0] == 0
        first, second = root / "spos-s1-seed0", root / "spos-s1-seed1"
        wait_for(lambda: (first / "supernet_checkpoint.pt").exists(), "run 0's first checkpoint")
        os.kill(wait_for(lambda: lock_of(first), "run 0's job")["pid"], signal.SIGUSR2)
        wait_for(lambda: (second / "supernet_checkpoint.pt").exists(), "run 1's first checkpoint")
        os.kill(int(wait_for(lambda: lock_of(second), "run 1's job")["job"]), signal.SIGTERM)  # to the job
        rc, stdout, err = cli(*args, "--wait")
        assert rc == 128 + signal.SIGTERM, stdout + err
        assert re.search(r"spos\s+s1\s+0\s+done", stdout) and re.search(r"spos\s+s1\s+1\s+stopped", stdout)
        assert "stopped by SIGTERM: 1 run(s) saved where they were; rerun the same command to resume" in err
        rc, stdout, err = cli(*args, "--wait")
        assert rc == 0 and "2 run(s) of preset smoke: 1 done, 0 queued or running, 1 to submit (local)" in stdout
    finally:
        del os.environ["ENNAS_WAIT_POLL_S"]
    for name in ("spos-s1-seed0", "spos-s1-seed1"):
        same_training(root / name, reference / name)
    assert (root / "REPORT.md").exists()
    rc, stdout, _ = cli(*args)  # a second submit of the finished plan submits nothing
    assert rc == 0 and "2 done, 0 queued or running, 0 to submit" in stdout


# --- docs/cluster.md -----------------------------------------------------------------------------------------------
def documented_commands() -> list[list[str]]:
    """The page's `python -m benchmark.run` commands, in order, as argument lists (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    commands = [shlex.split(block.replace("\\\n", " ")) for block in blocks]
    assert all(c[:3] == ["python", "-m", "benchmark.run"] for c in commands)
    return [c[3:] for c in commands]


def test_every_slurm_command_of_the_docs_has_its_local_twin_and_submits_to_a_fake_slurm(fake_slurm, tmp_path):
    commands = documented_commands()
    slurm, local = commands[0::2], commands[1::2]
    assert len(slurm) == len(local) == 3
    for big, small in zip(slurm, local):  # twins: same launcher flow, one on SLURM, one here
        assert "--launcher" in big and big[big.index("--launcher") + 1] == "slurm"
        assert small[small.index("--launcher") + 1] == "local" and ("--wait" in big) == ("--wait" in small)
    out = tmp_path / "imagenet"
    runs = [[str(out) if a == "/shared/runs/imagenet" else a for a in command] for command in slurm]
    rc, stdout, err = cli(*runs[0])  # one run on 8 GPUs: one job, no array
    assert rc == 0 and "ennas-s2-seed0: job 4242" in stdout, err
    flags = sbatch_lines(fake_slurm.scripts()[0])
    assert "array" not in flags and flags["gpus-per-node"] == "8" and flags["ntasks-per-node"] == "8"
    assert flags["cpus-per-task"] == "10" and flags["mem"] == "491520MB" and flags["signal"] == "USR2@300"
    fake_slurm.alive("always")  # the 8-GPU run is still queued: Table 1 submits the other 53
    rc, stdout, err = cli(*runs[1])
    assert rc == 0 and "54 run(s) of preset imagenet: 0 done, 1 queued or running, 53 to submit" in stdout, err
    assert sbatch_lines(fake_slurm.scripts()[1])["array"] == "0-52%8"
    fake_slurm.alive(54 + 54)  # --wait: all 54 queued at submission and at the first look, then gone
    os.environ["ENNAS_WAIT_POLL_S"] = "0"
    try:
        rc, stdout, err = cli(*runs[2])
    finally:
        del os.environ["ENNAS_WAIT_POLL_S"]
    assert "0 to submit" in stdout and "[ennas-s2-seed0] queued (job 4242)" in stdout
    assert "[cream-s1-seed0] ended (job 4243_0)" in stdout and len(fake_slurm.scripts()) == 2
    assert rc == 2 and "job 4243_0 ended before the run did" in stdout  # the fake jobs never ran


@pytest.mark.slow
def test_the_local_twins_of_the_docs_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv("ENNAS_WAIT_POLL_S", "0.5")
    out = tmp_path / "ennas-cluster"
    twins = [[str(out) if a == "/tmp/ennas-cluster" else a for a in c] for c in documented_commands()[1::2]]
    for command in twins:
        rc, stdout, err = cli(*command, "--set", "threads=1", "--jobs", "1")
        assert rc == 0, stdout + err
    assert re.search(r"^report: .*REPORT.md in ", stdout, flags=re.M)  # the --wait twin ends with the report
    rc, stdout, err = cli(*twins[0], "--set", "threads=1", "--jobs", "1", "--wait")  # the one run, followed too
    assert rc == 0 and "ennas" in stdout, stdout + err
    names = ["ennas-s2-seed0", *(f"{m}-s1-seed{s}" for s in (0, 1) for m in ("spos", "ennas"))]
    assert all((out / name / "final.json").exists() for name in names)
    assert len({read_json(out / name / LOCK)["job"] for name in names}) == 5  # a job per run
