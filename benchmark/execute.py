"""Carrying out a benchmark plan: each run's pipeline in this process or in spawned workers, failures recorded.

A run that raises leaves `<run>/error.json` (its one-line error, type, time and traceback) and the others go on;
a later success removes it. After a run is done, its supernet's ranking fidelity is scored where the preset has
a ground truth (`results/<preset>/groundtruth_<space>.csv`); a failure there is a warning, not a failed run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark import harness
from benchmark.harness import PlannedRun
from ennas.core import distributed as dist
from ennas.core import preempt
from ennas.core.checkpoint import CheckpointError
from ennas.core.config import ConfigError, RunConfig
from ennas.core.context import RunContext
from ennas.core.io import read_json, write_json
from ennas.core.loop import TrainingDiverged
from ennas.core.method import get_method
from ennas.core.pipeline import remove_checkpoints, run_pipeline
from ennas.core.search import BudgetError
from ennas.data import DataError
from ennas.method.ensemble import EnsembleSolverError

_SLOT: int | None = None  # this worker's index (0, 1, ...), which picks its GPU; None in the main process


@dataclass(frozen=True)
class Task:
    """One planned run with its resolved config, its folder and its CPU threads (0: leave torch's)."""

    run: PlannedRun
    cfg: RunConfig
    folder: Path
    threads: int = 0


def one_line(err: BaseException) -> str:
    """An exception as one line: its type where the message is empty, else the message's first line."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# Failures a user can cause or meet and fix without changing code: their one line says what to do, exit status 2.
USER_ERRORS = (
    ConfigError,
    DataError,
    CheckpointError,
    TrainingDiverged,
    BudgetError,
    EnsembleSolverError,
    OSError,
    MemoryError,
    torch.OutOfMemoryError,
)


def out_of_memory(err: BaseException) -> bool:
    """A GPU or host allocation failure (torch reports the CPU's as a RuntimeError)."""
    return isinstance(err, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in str(err)


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is a failure the user can fix (as opposed to a bug, whose traceback error.json keeps)."""
    return isinstance(err, USER_ERRORS) or out_of_memory(err) or type(err).__name__ == "SolverError"


def explain(err: BaseException) -> str:
    """The one line a user sees for `err`: what happened and, where the suite knows, what to change."""
    if out_of_memory(err):
        return (
            f"out of memory ({one_line(err)[:120]}): lower the per-device batch (supernet.batch_size or "
            "retrain.batch_size, split across ranks) or keep the batch and split each step with "
            "supernet.accumulate=K / retrain.accumulate=K"
        )
    if isinstance(err, EnsembleSolverError) or type(err).__name__ == "SolverError":
        return f"the ensemble-weight solver failed ({one_line(err)}); try the other solver with --set ennas.solver=..."
    if isinstance(err, PermissionError):
        return f"permission denied: {err.filename or one_line(err)}; make it writable or choose another --out"
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}"
    return one_line(err)


def task_device(requested: str) -> torch.device:
    """The run's device: in a worker on a GPU machine its own GPU (worker i: cuda:(i % count)), else as
    `dist.pick_device` decides (the CPU, or this rank's GPU under torchrun)."""
    if _SLOT is not None and requested != "cpu" and torch.cuda.is_available():
        index = _SLOT % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return dist.pick_device(requested)


def rank_run(folder: Path, preset: str, space: str) -> str | None:
    """Score the run's ranking fidelity into ranking.csv if the preset has a ground truth; a warning or None.

    A ranking older than the ground truth is scored again (a ground truth grows while it is computed); the
    memoised scores (ranking_scores.jsonl) make that cost only the architectures added since.
    """
    truth = Path("results") / preset / f"groundtruth_{space}.csv"
    ranking = folder / "ranking.csv"
    if not truth.exists() or (ranking.exists() and ranking.stat().st_mtime >= truth.stat().st_mtime):
        return None
    from benchmark.fidelity import ranking_for_run  # only when there is something to score

    try:
        ranking_for_run(folder, truth)
    except Exception as err:  # the run itself is done; its ranking is an extra
        return f"warning: ranking of {folder} against {truth} failed: {one_line(err)}"
    return None


def result_row(task: Task, status: str, **values) -> dict:
    """A summary row: the run's label, space, seed, folder and status, with what it gave."""
    r = task.run
    return {"label": r.label, "space": r.space, "seed": r.seed, "folder": task.folder, "status": status, **values}


def run_task(task: Task, preset: str, debug: bool = False) -> dict:
    """Run one pipeline (resuming), then its ranking; a failure becomes error.json and a `failed` row.

    A worker that has already received a stop signal starts nothing: the run stays `todo`, without a folder (a
    pool worker takes its next queued run as soon as the stopped one returns, before the harness can cancel it).
    """
    if preempt.received():
        return result_row(task, "todo")
    t0 = time.time()
    if task.threads:
        torch.set_num_threads(task.threads)
    try:
        ctx = RunContext(task.cfg, task.folder, task_device(task.cfg.device))
        final = run_pipeline(ctx, get_method(task.run.method)(ctx))
    except preempt.Preempted as err:  # the state is saved: not a failure, and no error.json
        return result_row(task, "stopped", minutes=(time.time() - t0) / 60, error=str(err), signal=err.signum)
    except Exception as err:
        if debug:  # in this process only: a worker's traceback goes to error.json
            raise
        line, user = explain(err), is_user_error(err)
        if dist.is_main():
            record = {"error": line, "type": type(err).__name__, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
            try:
                write_json(task.folder / "error.json", {**record, "traceback": traceback.format_exc()})
            except OSError:  # the folder is what failed (full disk, read-only): the line below still says why
                pass
        return result_row(task, "failed", minutes=(time.time() - t0) / 60, error=line, user_error=user)
    if dist.is_main():
        (task.folder / "error.json").unlink(missing_ok=True)  # from an earlier attempt
    warning = rank_run(task.folder, preset, task.run.space)
    row = result_row(task, "done", minutes=(time.time() - t0) / 60, top1=final["top1"], mflops=final["mflops"])
    return {**row, "arch": final["arch_readable"], "warning": warning}


def _init_worker(counter) -> None:
    """Take the next worker index (which picks the worker's GPU) and catch stop signals like the main process."""
    global _SLOT
    preempt.install()
    with counter.get_lock():
        _SLOT = counter.value
        counter.value += 1


def run_tasks(tasks: list[Task], jobs: int, preset: str, debug: bool) -> Iterator[dict]:
    """Rows of runs as they finish: one after another in this process for one job, else in spawned workers."""
    if jobs == 1:
        for task in tasks:
            row = run_task(task, preset, debug)
            if row["status"] == "todo":
                return
            yield row
            if row["status"] == "stopped" or preempt.received():
                return  # the remaining runs start on the rerun
        return
    # spawn, not fork: a forked child inherits torch's thread pool in an undefined state.
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(counter,)) as pool:
        futures = {pool.submit(run_task, task, preset): task for task in tasks}
        waiting, forwarded = set(futures), False
        try:
            while waiting:
                finished, waiting = wait(waiting, timeout=1.0, return_when=FIRST_COMPLETED)
                if preempt.received() and not forwarded:
                    # A signal to this process alone (kill PID, SLURM's batch step): pass it on, cancel the rest
                    forwarded = True
                    for future in waiting:
                        future.cancel()
                    for pid in list(getattr(pool, "_processes", {}) or {}):
                        with contextlib.suppress(ProcessLookupError):  # the worker already exited
                            os.kill(pid, preempt.received())
                for future in finished:
                    if future.cancelled():
                        continue
                    try:
                        row = future.result()
                        if row["status"] != "todo":  # a run a stopped worker declined to start stays todo
                            yield row
                    except Exception as err:  # the worker itself died (killed, out of memory)
                        task = futures[future]
                        record = {"error": one_line(err), "type": type(err).__name__}
                        write_json(task.folder / "error.json", {**record, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
                        yield result_row(task, "failed", error=one_line(err))
        finally:
            for future in futures:
                future.cancel()


def exit_status(rows: list[dict], signum: int | None) -> int:
    """0: every run done; 128 + signal: stopped by a signal; 2: every failure is one the user can fix (the one
    line says how); 1: some run failed unexpectedly (its error.json holds the traceback)."""
    if signum:
        return 128 + signum
    failed = [r for r in rows if r["status"] != "done"]
    if not failed:
        return 0
    return 2 if all(r.get("user_error") for r in failed) else 1


def earlier_row(task: Task, preset: str) -> dict:
    """The summary row of a run finished before this call (its ranking is scored if still missing)."""
    final = read_json(task.folder / "final.json")
    if dist.is_main() and not task.cfg.keep_checkpoints:
        remove_checkpoints(task.folder)  # finished with --keep-checkpoints, rerun without it
    warning = rank_run(task.folder, preset, task.run.space)
    return result_row(task, "done", minutes=None, top1=final["top1"], mflops=final["mflops"], warning=warning)


def progress(i: int, n: int, row: dict) -> None:
    """One line per finished run (rank 0): its result, or its error on stderr."""
    name = f"{row['label']}-{row['space']}-seed{row['seed']}"
    if row["status"] == "done":
        print(
            f"[{i}/{n}] {name}: {row['arch']}  top-1 {row['top1']:.2f}  {row['mflops']:.2f} MFLOPs"
            f"  {row['minutes']:.1f} min -> {row['folder']}",
            flush=True,
        )
    elif row["status"] == "stopped":  # saved, not failed: no error.json
        print(f"[{i}/{n}] {name}: {row['error']}", file=sys.stderr, flush=True)
    else:
        print(
            f"error: [{i}/{n}] {name} failed: {row['error']} ({row['folder']}/error.json)",
            file=sys.stderr,
            flush=True,
        )
    if row.get("warning"):
        print(row["warning"], file=sys.stderr, flush=True)


def execute(tasks: list[Task], jobs: int, preset: str, out: Path | None, debug: bool = False) -> int:
    """Start line, plan.json, every unfinished run, summary table, report; 0 if every run is done, else 1."""
    main = dist.is_main()
    statuses = dist.broadcast_object(
        [harness.run_status(t.folder, t.cfg.retrain.seeds) for t in tasks]
    )  # rank 0 decides what to run
    pending = [t for t, s in zip(tasks, statuses) if s != "done"]
    threads = tasks[0].threads or torch.get_num_threads()
    if main:
        labels = [t.run.label for t in tasks]
        print(harness.start_line(preset, statuses, jobs, threads, out or tasks[0].folder, labels), flush=True)
        warning = harness.load_warning(tasks[0].cfg.device, len(pending))
        if warning:
            print(warning, file=sys.stderr, flush=True)
        if out is not None:
            harness.write_plan(out, preset, [t.run for t in tasks])
    rows = {t.folder: earlier_row(t, preset) for t, s in zip(tasks, statuses) if s == "done"}
    # Workers take the longest runs first; one job keeps the plan's order.
    order = harness.longest_first(pending, preset, label=lambda t: t.run.label) if jobs > 1 else pending
    for i, row in enumerate(run_tasks(order, jobs, preset, debug), start=1):
        rows[row["folder"]] = row
        if main:
            progress(i, len(pending), row)
    ordered = [rows.get(t.folder) or result_row(t, "todo") for t in tasks]  # todo: not started before a stop
    signum = next((r["signal"] for r in ordered if r["status"] == "stopped"), None) or preempt.received()
    if not main:
        return exit_status(ordered, signum)
    return finish(ordered, out, signum)


def finish(ordered: list[dict], out: Path | None, signum: int | None) -> int:
    """The end of a plan (rank 0, or the launcher's --wait): the summary table, then the report or, after a
    stop, what to rerun; the exit status."""
    rc = exit_status(ordered, signum)
    if signum:
        print(harness.summary_table(ordered), flush=True)
        saved = sum(r["status"] == "stopped" for r in ordered)
        print(
            f"stopped by {signal.Signals(signum).name}: {saved} run(s) saved where they were; rerun the same command "
            "to resume",
            file=sys.stderr,
            flush=True,
        )
        return rc
    for row in ordered:
        if row.get("warning") and row["minutes"] is None:  # runs finished before: no progress line showed it
            print(row["warning"], file=sys.stderr)
    print(harness.summary_table(ordered), flush=True)
    if out is not None:
        from benchmark.report import build_report  # pandas and matplotlib, only when a report is due

        try:
            report = build_report(out)
            print(f"report: {', '.join(report['paths'])} in {out}")
        except Exception as err:  # the runs' own results stand; the report can be rebuilt
            print(
                f"error: the report of {out} failed: {one_line(err)} (python -m benchmark.report {out})",
                file=sys.stderr,
            )
            rc = 1
    return rc
