"""`--launcher local|slurm`: a plan's runs as submitit jobs, one per run in one job array, on SLURM or on this
machine through submitit's local executor (the same code path); docs/cluster.md has the commands.

The submitting command checks every setting first (one `error:` line), submits the runs that are neither done
nor held by a queued or running job (`slurm_job.holder`), prints their job ids and returns; with `--wait` it
follows them, a line per run whenever one moves on, and ends as the in-process harness does: the summary table
and the report. What runs inside each job is `slurm_job.RunJob`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import submitit
import torch
from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths

from benchmark import execute, harness
from benchmark.execute import Task, one_line, result_row
from benchmark.slurm_job import LOCK, RunJob, holder, write_lock
from ennas.core import preempt
from ennas.core.config import ConfigError
from ennas.core.io import read_json, read_jsonl

MAX_TIMEOUTS = 100  # requeues at the time limit before submitit gives up (a long run resumes across many)


@dataclass(frozen=True)
class Settings:
    """What each job asks for: SLURM's resources, its time limit (minutes) and the signal's lead on it (s)."""

    partition: str | None = None
    time: int = 1440
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    signal_delay_s: int = 120


# Each setting's flag help; the SLURM-only ones (all but time and signal_delay_s) are errors with --launcher local.
HELP = {
    "partition": "SLURM partition (or a comma list)",
    "time": "each job's time limit in minutes (default 1440); a run longer than that is requeued and resumes",
    "nodes": "nodes per run (default 1); its ranks are nodes x gpus-per-node",
    "gpus_per_node": "GPUs (and tasks) per node (default 0: one CPU task)",
    "cpus_per_task": "CPUs per task, also its torch threads (default: SLURM's)",
    "mem_gb": "memory per node in GB (default: SLURM's)",
    "array_parallelism": "runs of the array at once (default: all)",
    "signal_delay_s": "seconds before the time limit that the stop-and-requeue signal comes (default 120)",
}
SLURM_ONLY = set(HELP) - {"time", "signal_delay_s"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The launcher's options; `settings_from` checks their values (each bad one a single error line)."""
    g = p.add_argument_group("launchers: each run a submitit job (docs/cluster.md)")
    g.add_argument("--launcher", choices=("inprocess", "local", "slurm"), default="inprocess", help="default inprocess")
    g.add_argument("--wait", action="store_true", help="wait for the runs' jobs, show progress, build the report")
    for key, text in HELP.items():
        g.add_argument("--" + key.replace("_", "-"), metavar="N", help=text + "; or the preset's slurm section")


def _value(key: str, raw: object) -> object:
    """One setting, typed and in range, or a one-line ConfigError naming its flag."""
    flag = "--" + key.replace("_", "-")
    if key == "partition":
        if not isinstance(raw, str) or not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", raw):
            raise ConfigError(f"{flag} takes a partition name or a comma list of them, got {raw!r}")
        return raw
    try:
        value = float(raw) if key == "mem_gb" else int(str(raw))
    except ValueError:
        raise ConfigError(f"{flag} takes a {'number' if key == 'mem_gb' else 'whole number'}, got {raw!r}") from None
    low = 0 if key in ("gpus_per_node", "signal_delay_s") else 1
    if isinstance(raw, bool) or not value >= low or (key == "mem_gb" and value <= 0):
        raise ConfigError(f"{flag} must be {'> 0' if key == 'mem_gb' else f'>= {low}'}, got {raw!r}")
    return value


def settings_from(args: argparse.Namespace, section: object) -> Settings | None:
    """The launcher's settings (the preset's `slurm` section, then the flags), or None for the in-process harness;
    every bad value or combination is a ConfigError before anything is submitted."""
    flags = {k: getattr(args, k) for k in HELP if getattr(args, k) is not None}
    named = [f"--{k.replace('_', '-')}" for k in flags]
    if args.launcher == "inprocess":
        if named or args.wait:
            raise ConfigError(f"{', '.join(named + ['--wait'] * args.wait)}: only with --launcher local or slurm")
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--launcher submits the runs as jobs: run it as one process, not under torchrun")
    unknown = sorted(set(section) - set(HELP)) if isinstance(section, dict) else [repr(section)]
    if unknown:
        raise ConfigError(f"the preset's slurm section: unknown {', '.join(unknown)}; known: {', '.join(HELP)}")
    if args.launcher == "local":
        bad = [f"--{k.replace('_', '-')}" for k in flags if k in SLURM_ONLY]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: SLURM only; --launcher local runs each run as one process here")
        section = {k: v for k, v in section.items() if k not in SLURM_ONLY}  # the preset's cluster, not this machine
    elif args.jobs is not None:
        raise ConfigError("--jobs: runs at once on this machine; on SLURM each run is a job (--array-parallelism)")
    chosen = Settings(**{k: _value(k, v) for k, v in {**section, **flags}.items()})
    if chosen.signal_delay_s >= chosen.time * 60:
        raise ConfigError(f"--signal-delay-s {chosen.signal_delay_s} must be shorter than --time {chosen.time} (min)")
    if args.launcher == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ConfigError("--launcher slurm needs SLURM's sbatch and srun on PATH: run it on the cluster's login node")
    return chosen


# --- submitting and following -------------------------------------------------------------------------------------
def _executor(launcher: str, settings: Settings, jobs_folder: Path) -> submitit.Executor:
    """submitit's executor for `launcher`, asking for `settings`."""
    if launcher == "local":  # one process per run; RunJob gives it its GPU
        ex = submitit.LocalExecutor(jobs_folder, max_num_timeout=MAX_TIMEOUTS)
        ex.update_parameters(timeout_min=settings.time, signal_delay_s=settings.signal_delay_s)
        return ex
    ex = submitit.SlurmExecutor(jobs_folder, max_num_timeout=MAX_TIMEOUTS)
    ex.update_parameters(
        job_name="ennas-bench",
        time=settings.time,
        nodes=settings.nodes,
        ntasks_per_node=max(1, settings.gpus_per_node),  # a task per GPU, or one on a CPU node
        gpus_per_node=settings.gpus_per_node or None,
        cpus_per_task=settings.cpus_per_task,
        mem=None if settings.mem_gb is None else f"{round(settings.mem_gb * 1024)}MB",
        partition=settings.partition,
        signal_delay_s=settings.signal_delay_s,
        array_parallelism=settings.array_parallelism or 100_000,
    )
    return ex


@contextlib.contextmanager
def _detached(local: bool) -> Iterator[None]:
    """Local jobs start from here: they inherit an ignored SIGINT (Ctrl-C stops this command, not them) and
    /dev/null as stdout and stderr (a pipe from this command closes when it ends, not when they do)."""
    if not local:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved, null = (os.dup(1), os.dup(2)), os.open(os.devnull, os.O_WRONLY)
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
        signal.signal(signal.SIGINT, interrupt)


def _gpus() -> tuple[str, ...]:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES entries: local job i takes entry i mod their count."""
    if not torch.cuda.is_available():
        return ()
    listed = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return tuple(listed or map(str, range(torch.cuda.device_count())))[: torch.cuda.device_count()]


def _where(folder: Path) -> str:
    """How far a run got, from its files: queued, starting, a stage's epoch, searching, done."""
    if (folder / "final.json").exists():
        return "done"
    with contextlib.suppress(OSError, ValueError, IndexError, KeyError):
        last = read_jsonl(folder / "train_log.jsonl")[-1]
        if last["stage"] != "retrain" and (folder / "supernet.pt").exists():
            return "searching"
        return f"{last['stage']} epoch {last['epoch']}"
    return "starting" if (folder / "config.json").exists() else "queued"


def _final_row(task: Task, preset: str, jobs_folder: Path, job: str | None) -> dict:
    """A run's summary row after its job: the row the job returned where it left one, else its folder's."""
    paths = JobPaths(jobs_folder, job_id=job)
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        outcome, row = pickle.loads(paths.result_pickle.read_bytes())  # ("success", row) or ("error", traceback)
        if outcome == "success":
            return row
    status = harness.run_status(task.folder, task.cfg.retrain.seeds)
    if status == "done":
        return execute.earlier_row(task, preset)
    if status == "failed":
        return result_row(task, "failed", error=read_json(task.folder / "error.json")["error"])
    error = f"job {job} ended before the run did ({paths.stderr}); rerun the same command to resume"
    return result_row(task, "failed", error=error, user_error=True)


def wait(tasks: list[Task], preset: str, out: Path | None, jobs_folder: Path, jobs: dict, poll_s: float) -> int:
    """Follow the runs until no job holds any (a line whenever one moves on), then the table and the report."""
    shown: dict[Path, str] = {}
    while True:
        held = {t.folder: holder(t.folder) for t in tasks}
        for task in tasks:
            lock = held[task.folder]
            jobs.update({task.folder: lock["job"]} if lock else {})
            state = _where(task.folder) if lock or task.folder not in jobs else "ended"
            state += f" (job {jobs[task.folder]})" if task.folder in jobs else ""
            if shown.get(task.folder) != state:
                print(f"[{task.run.name}] {state}", flush=True)
                shown[task.folder] = state
        if not any(held.values()):
            break
        if preempt.received():  # Ctrl-C: stop following, not the jobs
            print("stopped waiting; the jobs go on (the same command with --wait follows them)", file=sys.stderr)
            return 128 + preempt.received()
        time.sleep(poll_s)
    rows = [_final_row(t, preset, jobs_folder, jobs.get(t.folder)) for t in tasks]
    return execute.finish(rows, out, next((r["signal"] for r in rows if r["status"] == "stopped"), None))


def launch(args: argparse.Namespace, settings: Settings, tasks: list[Task], jobs: int, out: Path | None) -> int:
    """Submit the plan's runs that are neither done nor held by a live job, as one array, and print their job
    ids; then return, or with --wait follow them to the report."""
    preset = Path(args.preset).stem
    logs = out / "submitit" if out else tasks[0].folder.with_name(tasks[0].folder.name + ".submitit")
    jobs_folder = logs / "%j" if args.launcher == "slurm" else logs  # local jobs' files side by side
    if args.launcher == "slurm":  # threads from each task's own CPUs, not this login node's
        tasks = [replace(t, threads=t.cfg.threads or settings.cpus_per_task or 0) for t in tasks]
    held = {t.folder: holder(t.folder) for t in tasks}
    if args.fresh:
        busy = [f"{t.run.name} (job {held[t.folder]['job']})" for t in tasks if held[t.folder]]
        if busy:
            raise ConfigError(f"--fresh: {', '.join(busy)} still queued or running; cancel them first")
        for task in tasks:
            (task.folder / LOCK).unlink(missing_ok=True)
            harness.discard_run(task.folder)
    done = [harness.run_status(t.folder, t.cfg.retrain.seeds) == "done" for t in tasks]
    todo = [t for t, d in zip(tasks, done) if not d and not held[t.folder]]
    live = sum(map(bool, held.values()))
    where = out or tasks[0].folder
    print(f"plan: {len(tasks)} run(s) of preset {preset}: {sum(done)} done, {live} queued or running, "
          f"{len(todo)} to submit ({args.launcher}) -> {where}", flush=True)  # fmt: skip
    if out is not None:
        harness.write_plan(out, preset, [t.run for t in tasks])
    submitted = {folder: lock["job"] for folder, lock in held.items() if lock}
    if todo:
        executor = _executor(args.launcher, settings, jobs_folder)
        try:
            with _detached(args.launcher == "local"), executor.batch():  # one array: one sbatch for all runs
                handles = [executor.submit(RunJob(t, preset, args.launcher, jobs, logs, _gpus())) for t in todo]
        except (FailedJobError, FailedSubmissionError) as err:
            raise ConfigError(f"submitting the runs failed: {one_line(err)}") from None
        for task, handle in zip(todo, handles):
            if args.launcher == "slurm" or holder(task.folder) is None:  # a local job may have taken it already
                write_lock(task.folder, handle.job_id, args.launcher)
            submitted[task.folder] = handle.job_id
            print(f"  {task.run.name}: job {handle.job_id}", flush=True)
        print(f"submitted {len(todo)} run(s); logs in {logs}", flush=True)
    if args.wait:
        poll_s = float(os.environ.get("ENNAS_WAIT_POLL_S", 30 if args.launcher == "slurm" else 1))  # squeue: gently
        return wait(tasks, preset, out, jobs_folder, submitted, poll_s)
    if submitted:
        print("the same command with --wait follows them and builds the report", flush=True)
    return 0
