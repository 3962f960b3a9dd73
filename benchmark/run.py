"""The benchmark harness: the whole pipeline (supernet -> search -> retrain) for every run of a plan.

    python -m benchmark.run --method all --space all --seeds 0-2          # every method and variant, Table 1
    python -m benchmark.run --method spos,cream --preset smoke --jobs 2
    python -m benchmark.run --method spos --preset smoke --run-dir /tmp/spos   # one run into a fixed folder
    torchrun --nproc_per_node 8 -m benchmark.run --method ennas --space s2 --preset imagenet --data /data/ILSVRC2012
    python -m benchmark.run --method all --preset imagenet --launcher slurm --gpus-per-node 8   # docs/cluster.md

Each (label, space, seed) is its own folder `OUT/<label>-<space>-seed<N>`; rerunning skips finished runs and
resumes unfinished ones from their last checkpoint. A run that fails leaves `error.json` and the others go on.
At the end: a summary table and the report (`python -m benchmark.report runs/proxy` redraws it). Exit status: 0
when every run is done; 2 for bad input and for failures the user can fix (a wrong --data folder, no GPU, out of
memory, a full disk, a corrupt checkpoint, a diverged loss: one line `error: ...` that says what to change); 1
when a run failed unexpectedly (a bug: its error.json keeps the traceback) or the report failed; 128 + N when
stopped by signal N (rerun the same command to resume). More: docs/running.md, docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark import harness, slurm
from benchmark.execute import Task, execute, explain
from benchmark.preset import list_presets, load_preset
from ennas.core import distributed as dist
from ennas.core import preempt
from ennas.core.config import ConfigError, parse_overrides
from ennas.core.resume import check_resumable
from ennas.data import DataError
from spaces.registry import list_spaces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, documented in --help."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    labels = ", ".join(harness.known_labels())
    p.add_argument("--method", default="all", help=f"{labels}, a comma list, or 'all' (default)")
    p.add_argument("--space", default="s1", help=f"{', '.join(list_spaces())}, a comma list or all (s1-s3); default s1")
    p.add_argument("--seeds", "--seed", default="0", help="seeds such as 0, 0-2 or 0,3 (default 0)")
    p.add_argument("--preset", default="proxy", help=f"{', '.join(list_presets())} or a JSON file (default proxy)")
    p.add_argument("--dataset", help="override the preset's dataset: fashion-mnist, imagenet or synthetic")
    p.add_argument("--data", help="dataset root folder (ImageNet: the folder holding train/ and val/)")
    p.add_argument("--out", type=Path, help="root of the run folders, plan.json and report (default runs/PRESET)")
    p.add_argument("--run-dir", type=Path, help="the one planned run's own folder (no plan.json, no report)")
    p.add_argument("--jobs", type=int, help="runs at once (default: one per core, or one per GPU)")
    p.add_argument("--fresh", action="store_true", help="discard the planned runs' folders and start them again")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep *_checkpoint.pt when a run completes (default: removed)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set supernet.epochs=10 --set ennas.tau=2 (sections: docs/running.md)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    slurm.add_arguments(p)
    return p.parse_args(argv)


def under_torchrun() -> bool:
    """Whether torchrun started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def user_overrides(args: argparse.Namespace) -> dict:
    """The --set values as nested overrides, with --dataset and --data as data.dataset and data.root."""
    user = parse_overrides(args.overrides)
    data = user.setdefault("data", {})
    if args.dataset:
        data["dataset"] = args.dataset
    if args.data:
        data["root"] = args.data
    if args.keep_checkpoints:
        user["keep_checkpoints"] = "true"
    return user


def plan_tasks(args: argparse.Namespace) -> tuple[list[Task], int, Path | None]:
    """The plan's runs with resolved configs and folders, and the jobs; every bad input fails here, before any work."""
    runs = harness.plan_runs(
        harness.parse_labels(args.method), harness.parse_spaces(args.space), harness.parse_seeds(args.seeds)
    )
    if args.run_dir and (args.out or len(runs) > 1):
        which = "--out" if args.out else f"a plan of {len(runs)} runs ({', '.join(r.name for r in runs)})"
        raise ConfigError(f"--run-dir is one run's folder; it does not go with {which}")
    preset, user = load_preset(args.preset), user_overrides(args)
    preset = {k: v for k, v in preset.items() if k != "slurm"}  # the launcher's section (benchmark.slurm)
    cfgs = [harness.run_config(preset, user, r) for r in runs]
    out = None if args.run_dir else args.out or Path("runs") / Path(args.preset).stem
    folders = [args.run_dir] if args.run_dir else [out / r.name for r in runs]
    if args.launcher != "slurm":  # a login node may have no GPU or data; the jobs check theirs
        check_data(cfgs)
    for folder, cfg in zip(folders, cfgs, strict=True):
        if args.launcher != "slurm":
            dist.check_device(cfg.device)
        if not args.fresh:
            check_resumable(folder, cfg)  # a folder made with other settings is refused before any work
    pending = sum(harness.run_status(f, c.retrain.seeds) != "done" for f, c in zip(folders, cfgs, strict=True))
    jobs = harness.choose_jobs(args.jobs, pending, cfgs[0].device, under_torchrun())
    threads = harness.worker_threads(jobs)
    tasks = [Task(r, c, f, c.threads or threads) for r, c, f in zip(runs, cfgs, folders, strict=True)]
    return tasks, jobs, out


def check_data(cfgs: list) -> None:
    """Open every dataset the plan reads, once per (dataset, folder, options, split sizes): a wrong --data folder
    or a dataset too small is one line (exit 2) before the start line, with no folder written."""
    from ennas.core.context import open_data  # torch and the data layer: only once the arguments parse

    seen = set()
    for cfg in cfgs:
        d = cfg.data
        key = (
            d.dataset,
            d.root,
            repr(sorted(d.options.items())),
            d.search_size,
            d.recal_size,
            d.train_size,
            d.test_size,
        )
        if key not in seen:
            seen.add(key)
            open_data(cfg)


def prepare_folders(tasks: list[Task], out: Path | None, fresh: bool) -> None:
    """Under torchrun, check that every rank sees what rank 0 writes; then (rank 0 only) discard for --fresh."""
    dist.check_shared_folder(out or tasks[0].folder)
    if fresh and dist.is_main():
        for task in tasks:
            harness.discard_run(task.folder)
    dist.barrier()


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input or a failure the user can fix becomes one `error:` line and exit status 2 (a run's
    unexpected failure: 1); a stop signal saves the state and exits with 128 + the signal number."""
    args = parse_args(argv)
    preempt.install()
    try:
        settings = slurm.settings_from(args, load_preset(args.preset).get("slurm", {}))  # None: run here
        tasks, jobs, out = plan_tasks(args)
        if settings is not None:  # submit the runs as jobs (and with --wait, follow them to the report)
            return slurm.launch(args, settings, tasks, jobs, out)
        if under_torchrun():
            dist.init(dist.pick_device(tasks[0].cfg.device))
        prepare_folders(tasks, out, args.fresh)
    except (ConfigError, DataError, ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"error: {explain(err)}", file=sys.stderr)
        dist.shutdown()
        return 2
    try:
        return execute(tasks, jobs, Path(args.preset).stem, out, args.debug)
    except OSError as err:  # plan.json or the report's folder cannot be written
        if args.debug:
            raise
        print(f"error: {explain(err)}", file=sys.stderr)
        return 2
    finally:
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
