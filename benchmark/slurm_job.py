"""Inside a submitit job: one run of a plan (`RunJob`), stopped and requeued on submitit's signal; and which job
holds a run folder (`job.lock`, checked against SLURM's queue or the local job's process).

A job runs its run with the code the `--jobs` workers use (`execute.run_task`). A job of several tasks is one
torch.distributed run: rank, world size and master come from submitit's job environment, exported as torchrun
would, so `ennas.core.distributed` initialises as under torchrun. On submitit's signal (USR2: before the time
limit, and at preemption where the cluster allows it) the run stops at its next safe point through the SIGTERM
path (`ennas.core.preempt`, which saves a checkpoint there); then submitit's own handler calls
`RunJob.checkpoint` and requeues the same submission, which resumes. A SIGTERM alone (scancel) saves and stops
without a requeue. A job that finds its folder held by another live job does not run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from benchmark import execute
from benchmark.execute import Task, one_line, result_row
from ennas.core import distributed as dist
from ennas.core import preempt
from ennas.core.config import ConfigError
from ennas.core.io import read_json, write_json

LOCK = "job.lock"  # {"job": id, "launcher": local | slurm, "host": where submitted, "pid": the job's rank 0}
REQUEUE = signal.SIGUSR2  # submitit's preemption / time-limit signal (its default SUBMITIT_PREEMPT_SIGNAL)
LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "SUSPENDED"}
LIVE |= {"RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}  # squeue states of a job that may still run


# --- which job holds a run folder -------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    """Whether local job `pid` (submitit's controller process) still runs; a zombie child of ours does not."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, just ended: reap it
            return False
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline")
        return not cmdline.exists() or b"submitit" in cmdline.read_bytes()  # not a reused pid
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process, or /proc unreadable: assume it is the job
        return True


def _slurm_alive(job: str) -> bool:
    """Whether SLURM still has job `job` queued, running or requeued."""
    cmd = ["squeue", "--noheader", "--array", "--jobs", job, "--format=%T"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError(f"cannot ask squeue about job {job}: {one_line(err)}") from None
    if proc.returncode and "invalid job id" in proc.stderr.lower():  # ended long ago
        return False
    if proc.returncode:
        raise ConfigError(f"squeue failed on job {job}: {one_line(RuntimeError(proc.stderr))}")
    return bool(set(proc.stdout.split()) & LIVE)


def holder(folder: Path, me: str | None = None) -> dict | None:
    """The lock of the queued or running job, other than `me`, that holds `folder`; None if there is none."""
    try:
        lock = read_json(folder / LOCK)
        job, launcher, host = str(lock["job"]), lock["launcher"], lock["host"]
    except (OSError, ValueError, KeyError, TypeError):  # none, or not a lock this module wrote
        return None
    if job == me:
        return None
    if launcher == "slurm":
        return lock if _slurm_alive(job) else None
    if host != socket.gethostname():
        return lock  # another machine's local job cannot be checked from here: it counts as running
    return lock if job.isdigit() and _pid_alive(int(job)) else None


def write_lock(folder: Path, job: str, launcher: str, pid: int | None = None) -> None:
    """Mark `folder` as held by `job` (the job itself adds its rank-0 process)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / LOCK, {"job": job, "launcher": launcher, "host": socket.gethostname(), "pid": pid})


# --- inside a job -------------------------------------------------------------------------------------------------
def export_torch_env(env: submitit.JobEnvironment) -> bool:
    """For a job of several tasks, set torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) from
    submitit's job environment; each task keeps every GPU of its node and takes its own by LOCAL_RANK."""
    if env.num_tasks <= 1:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


def _take_slot(folder: Path, slots: int) -> int:
    """Local jobs: wait for one of `slots` slots (flocks, freed when the process ends), so that at most `slots`
    runs train at once here, as with `--jobs`; the slot's index picks the GPU as a worker's does."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(slots):
            fd = os.open(folder / f"slot{index}", os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return index  # the descriptor stays open, the slot taken, until this process ends
            except BlockingIOError:
                os.close(fd)
        time.sleep(0.5)


@dataclass(frozen=True)
class RunJob:
    """One run as a submitit job: calling it runs (or resumes) the run; `checkpoint` resubmits it on a requeue."""

    task: Task
    preset: str
    launcher: str
    slots: int  # local: runs at once on this machine
    logs: Path
    gpus: tuple[str, ...] = ()  # local: the GPUs the submitting command saw (CUDA_VISIBLE_DEVICES entries)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """The same run again: its folder holds the state, so the requeued job resumes where this one stopped."""
        return submitit.helpers.DelayedSubmission(self)

    def __call__(self) -> dict:
        env, task = submitit.JobEnvironment(), self.task
        requeue = signal.getsignal(REQUEUE)  # submitit's: checkpoint(), requeue, exit (where it runs the job)
        detached = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # a local job: Ctrl-C is for the terminal's
        preempt.install()
        if detached:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop = signal.getsignal(signal.SIGTERM)
        signal.signal(REQUEUE, lambda signum, frame: stop(signum, frame))  # first stop at the next safe point
        if self.launcher == "local":
            slot = _take_slot(self.logs / "slots", self.slots)
            gpu = self.gpus[slot % len(self.gpus)] if self.gpus else ""
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA starts: slot i on GPU i mod count, as --jobs
        if export_torch_env(env):
            dist.init(dist.pick_device(task.cfg.device))
        try:
            dist.check_shared_folder(task.folder)
            other = dist.broadcast_object(holder(task.folder, env.job_id) if dist.is_main() else None)
            if other:  # never two jobs on one folder
                return result_row(task, "failed", error=f"{task.folder} is held by job {other['job']}", user_error=True)
            if dist.is_main():
                write_lock(task.folder, env.job_id, self.launcher, os.getpid())
            row = execute.run_task(task, self.preset)
            if row["status"] == "stopped" and row.get("signal") == REQUEUE and callable(requeue):
                print(f"{row['error']}: requeued", file=sys.stderr, flush=True)
                requeue(REQUEUE, None)  # rank 0 exits here; the others return, and the requeue restarts them
            return row
        finally:  # the lock stays: the job counts as holding the folder until it has ended (its result written)
            dist.shutdown()
