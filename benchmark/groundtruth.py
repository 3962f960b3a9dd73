"""Stand-alone ground truth for ranking fidelity: architectures of the search's FLOPs band trained from scratch.

    python -m benchmark.groundtruth --space s1 --preset proxy --archs 40 --seeds-per-arch 3 --jobs 2

N architectures are drawn uniformly (`spaces.arch.sample_uniform`, rejection-sampled, distinct) from the
generator `np.random.default_rng(ARCH_SEED)`, so every machine draws the same list and `--archs 60` extends
`--archs 40` by 20. The default band is [0.75 B, B] MFLOPs with B the run's search budget: the search only
ever compares architectures under the budget and its winners sit just below it, so that is where a supernet's
ranking matters; and a band this narrow keeps FLOPs from ranking them on their own (over the whole space,
bigger networks are simply better, and every predictor, FLOPs included, would look good).

Each (architecture, seed) trains with the preset's retraining recipe (`ennas.core.retrain`) in its own folder
under --work, resumable per epoch; the ground-truth seed is the run seed, so it also moves the seeded data split
(the training subset), and seed-to-seed spread includes that. One CSV row per finished training, the whole file
rewritten atomically; `<CSV>.json` says how the file was made, and a rerun with another band, preset, recipe or
data refuses to mix its rows in. Bad input ends with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

import benchmark.methods  # noqa: F401  (registers every method's options section, so presets resolve)
from benchmark.preset import list_presets, load_preset
from ennas.core import distributed as dist
from ennas.core.config import ConfigError, RunConfig, parse_overrides, resolve
from ennas.core.context import RunContext
from ennas.core.evaluate import evaluate
from ennas.core.io import read_json, write_json, write_text
from ennas.core.loop import TrainingDiverged
from ennas.core.resume import flatten
from ennas.core.retrain import load_retrained, retrain
from ennas.data import DataError
from spaces.arch import Arch, decode, encode, sample_uniform
from spaces.registry import SpaceSpec, get_space, list_spaces

ARCH_SEED = 20_240_917  # the architectures' draw; fixed so that every rerun and machine draws the same list
BAND_FRACTION = 0.75  # default band: [0.75 x budget, budget]
COLUMNS = ("arch", "seed", "test_top1", "search_top1", "mflops", "params", "seconds")
# Data settings that say where and how fast, not what is trained on: never part of a fingerprint.
MACHINE_DATA_SETTINGS = ("root", "num_workers", "host_cache_gib")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, documented in --help."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.groundtruth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --seeds must not pass for --seeds-per-arch
    )
    p.add_argument("--space", default="s1", help=f"search space: {', '.join(list_spaces())} (default s1)")
    p.add_argument("--preset", default="proxy", help=f"{', '.join(list_presets())} or a JSON file (default proxy)")
    p.add_argument("--archs", type=int, default=40, help="architectures to draw (default 40)")
    p.add_argument("--seeds-per-arch", type=int, default=3, help="trainings per architecture, seeds 0..K-1 (default 3)")
    # benchmark.run's --seeds names seeds (0-2); here the count per architecture is --seeds-per-arch
    p.add_argument("--seeds", dest="seeds_spec", help=argparse.SUPPRESS)
    p.add_argument("--jobs", type=int, default=1, help="worker processes, each with cores // jobs threads")
    p.add_argument("--band", help="FLOPs band LOW,HIGH in MFLOPs (default [0.75 x budget, budget])")
    p.add_argument("--arch", action="append", default=[], help="an explicit architecture instead of the draw")
    p.add_argument("--out", type=Path, help="CSV (default results/PRESET/groundtruth_SPACE.csv)")
    p.add_argument("--work", type=Path, help="training folders (default runs/groundtruth/PRESET-SPACE)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="any setting")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p.parse_args(argv)


def parse_band(text: str) -> tuple[float, float]:
    """`"5.5,7.5"` -> (5.5, 7.5) MFLOPs, with 0 <= low < high."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--band takes LOW,HIGH in MFLOPs, got {text!r}") from None
    if not 0 <= low < high:
        raise ConfigError(f"--band needs 0 <= LOW < HIGH, got {low}, {high}")
    return low, high


def in_band(mflops: float, band: tuple[float, float]) -> bool:
    """Whether a FLOPs count (MFLOPs) lies in the closed band; compared in MFLOPs everywhere, so never ambiguous."""
    return band[0] <= mflops <= band[1]


def draw_archs(space: SpaceSpec, mflops, band: tuple[float, float], n: int, seed: int = ARCH_SEED) -> list[Arch]:
    """The first `n` distinct uniform architectures within `band` (MFLOPs, `mflops(arch)`), by rejection sampling."""
    rng = np.random.default_rng(seed)
    found: dict[Arch, None] = {}
    draws = 0
    while len(found) < n:
        draws += 1
        if draws > 1000 * n:  # a band the space barely reaches, or more architectures than it holds
            raise ConfigError(f"only {len(found)} of {n} distinct architectures in {band} MFLOPs after {draws} draws")
        arch = sample_uniform(space, rng)
        if arch not in found and in_band(mflops(arch), band):
            found[arch] = None
    return list(found)


def layout_digest(space: SpaceSpec) -> str:
    """A short digest of the space's whole layout (stem, layers and their candidates, tail), so a ground truth
    made before a layout change is refused rather than mixed with one made after it."""
    spec = {f.name: getattr(space, f.name) for f in dataclasses.fields(space) if f.compare}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def recipe_and_data(cfg: RunConfig) -> dict:
    """The training recipe and the data settings that change what is trained on: part of every fingerprint."""
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in MACHINE_DATA_SETTINGS}
    return {"recipe": dataclasses.asdict(cfg.retrain), "data": data}


def training_fingerprint(cfg: RunConfig) -> dict:
    """What decides one training's result: space and its layout, recipe and data (not the machine, root or
    worker count)."""
    values = {
        "space": cfg.space,
        "scale": cfg.scale,
        "layout": layout_digest(get_space(cfg.space, cfg.scale)),
        **recipe_and_data(cfg),
    }
    return json.loads(json.dumps(values))  # as it reads back from JSON (tuples become lists)


def csv_fingerprint(cfg: RunConfig, preset: str, band: tuple[float, float]) -> dict:
    """What makes rows comparable within one CSV: the training's fingerprint, the preset, band and scoring split."""
    return {
        "preset": preset,
        "band_mflops": list(band),
        "eval_images": cfg.search.eval_images,
        **training_fingerprint(cfg),
    }


def check_made_alike(sidecar: Path, expected: dict, what: str, advice: str) -> dict:
    """The sidecar's values (empty if none), or a ConfigError naming the first setting it differs in."""
    if not sidecar.exists():
        return {}
    made = read_json(sidecar)
    stored, added_later = flatten(made), fingerprint_defaults()
    missing = object()
    for key, value in flatten(expected).items():
        # A setting the record lacks was added to the suite after it was made: it counts as its default, which
        # is the behaviour before it (as a run's resume does), so a ground truth in progress survives upgrades.
        was = stored.get(key, added_later.get(key, missing))
        if was != value:
            raise ConfigError(f"{what} was made with {key} = {None if was is missing else was}, not {value}; {advice}")
    return made


def fingerprint_defaults() -> dict:
    """The training fingerprint's recipe and data settings at their defaults, as dotted keys in JSON form."""
    return flatten(json.loads(json.dumps(recipe_and_data(RunConfig()))))


def read_rows(path: Path) -> list[dict]:
    """The rows of a ground-truth CSV as text, as written (a missing file has none)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    """The whole CSV atomically (ennas.core.io), so an interrupted write never leaves half a file."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def train_one(cfg: RunConfig, arch: str, out: Path) -> dict:
    """Train one architecture with `cfg`'s recipe and seed in `out` (resuming); its CSV row, formatted."""
    ctx = RunContext(cfg, Path(out), dist.pick_device(cfg.device))
    net = decode(ctx.space, arch)
    result = retrain(ctx, net)
    model = load_retrained(ctx).to(ctx.device).eval()
    search = evaluate(model, ctx.search_batches, ctx.device, over_ranks=False)["top1"]  # whole on every rank
    return {
        "arch": encode(net),
        "seed": str(cfg.seed),
        "test_top1": f"{result['top1']:.4f}",
        "search_top1": f"{search:.4f}",
        "mflops": f"{ctx.table.flops(net) / 1e6:.6f}",
        "params": str(ctx.table.params(net)),
        # Training seconds summed over epochs from the log, so a resumed training counts its earlier epochs too.
        "seconds": f"{result['retrain_device_s']:.1f}",
    }


def _init_worker(threads: int) -> None:
    """Each worker's share of the cores (a spawned process starts with torch's default, all of them)."""
    torch.set_num_threads(threads)


def run_tasks(tasks: list[tuple[RunConfig, str, Path]], jobs: int, threads: int) -> Iterator[dict]:
    """Rows of finished trainings as they finish: in this process for one job, else in spawned workers."""
    if jobs == 1:
        for task in tasks:
            yield train_one(*task)
        return
    # spawn, not fork: a forked child inherits torch's thread pool in an undefined state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(train_one, *task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_archs(args: argparse.Namespace, ctx: RunContext) -> tuple[tuple[float, float], list[Arch]]:
    """The band (MFLOPs) and the architectures: the explicit ones, each checked against the band, or the draw."""
    budget = ctx.flops_budget / 1e6
    band = parse_band(args.band) if args.band else (BAND_FRACTION * budget, budget)

    def mflops(arch: Arch) -> float:
        return ctx.table.flops(arch) / 1e6

    if not args.arch:
        return band, draw_archs(ctx.space, mflops, band, args.archs)
    archs = list(dict.fromkeys(decode(ctx.space, a) for a in args.arch))
    outside = [f"{encode(a)} ({mflops(a):.3f})" for a in archs if not in_band(mflops(a), band)]
    if outside:
        raise ConfigError(f"outside the band [{band[0]:.3f}, {band[1]:.3f}] MFLOPs: {', '.join(outside)}")
    return band, archs


def claim_outputs(ctx: RunContext, out: Path, expected: dict, sidecar_extra: dict) -> list[str]:
    """Refuse a CSV or work folder made otherwise, then (re)write both records; the CSV's architecture order."""
    sidecar = out.with_name(out.name + ".json")
    if out.exists() and not sidecar.exists():
        raise ConfigError(f"{out} has no {sidecar.name}, so how it was made is unknown; use another --out")
    made = check_made_alike(sidecar, expected, str(out), "use another --out to keep ground truths apart")
    training = training_fingerprint(ctx.cfg)
    check_made_alike(ctx.file("groundtruth.json"), training, str(ctx.out), "use another --work")
    write_json(ctx.file("groundtruth.json"), training)
    names = list(dict.fromkeys([*made.get("archs", []), *sidecar_extra.pop("archs")]))  # earlier rows keep place
    commands = [*made.get("commands", []), sidecar_extra.pop("command")]
    seeds = max(sidecar_extra.pop("seeds"), made.get("seeds", 0))
    write_json(sidecar, {**expected, **sidecar_extra, "archs": names, "seeds": seeds, "commands": commands})
    return names


def make_groundtruth(args: argparse.Namespace, argv: list[str]) -> int:
    """Resolve, check against what exists, then train every missing (arch, seed) and write its row."""
    if args.seeds_spec is not None:
        raise ConfigError(
            f"--seeds {args.seeds_spec}: the ground truth's count of trainings per architecture is "
            f"--seeds-per-arch (--seeds names seeds in benchmark.run)"
        )
    if args.archs < 1 or args.seeds_per_arch < 1 or args.jobs < 1:
        raise ConfigError("--archs, --seeds-per-arch and --jobs must be >= 1")
    preset = Path(args.preset).stem
    cfg = resolve(load_preset(args.preset), parse_overrides(args.overrides), space=args.space, seed=0)
    out = args.out or Path("results") / preset / f"groundtruth_{cfg.space}.csv"
    work = args.work or Path("runs") / "groundtruth" / f"{preset}-{cfg.space}"
    threads = cfg.threads or max(1, usable_cores() // args.jobs)
    torch.set_num_threads(threads)
    ctx = RunContext(cfg, work, dist.pick_device(cfg.device))  # the space, FLOPs table and budget
    band, archs = choose_archs(args, ctx)
    budget = ctx.flops_budget / 1e6
    command = {"argv": "python -m benchmark.groundtruth " + shlex.join(argv), "jobs": args.jobs, "threads": threads}
    extra = {
        "budget_mflops": budget,
        "arch_seed": None if args.arch else ARCH_SEED,
        "archs": [encode(a) for a in archs],
        "seeds": args.seeds_per_arch,
        "command": {**command, "started": time.strftime("%Y-%m-%d %H:%M:%S")},
        "config": cfg.to_dict(),
    }
    order = {name: i for i, name in enumerate(claim_outputs(ctx, out, csv_fingerprint(cfg, preset, band), extra))}

    rows = read_rows(out)
    done = {(r["arch"], int(r["seed"])) for r in rows}
    # Seed-major: after the first pass every architecture has one figure, which already ranks them.
    todo = [(s, encode(a)) for s in range(args.seeds_per_arch) for a in archs if (encode(a), s) not in done]
    tasks = [(dataclasses.replace(cfg, seed=s), a, work / f"{a}_seed{s}") for s, a in todo]
    print(
        f"ground truth {preset}/{cfg.space}: {len(archs)} architectures x {args.seeds_per_arch} seeds in "
        f"[{band[0]:.3f}, {band[1]:.3f}] MFLOPs (budget {budget:.3f}); {len(done)} rows done, {len(tasks)} to train, "
        f"{args.jobs} job(s) x {threads} thread(s) -> {out}",
        flush=True,
    )
    t0 = time.time()
    for i, row in enumerate(run_tasks(tasks, args.jobs, threads), start=1):
        rows.append(row)
        rows.sort(key=lambda r: (int(r["seed"]), order.get(r["arch"], len(order)), r["arch"]))
        write_rows(out, rows)
        elapsed = time.time() - t0
        print(
            f"[{i}/{len(tasks)}] {row['arch']} seed {row['seed']}: test {row['test_top1']} search {row['search_top1']} "
            f"{float(row['mflops']):.3f} MFLOPs {int(row['params']) / 1e6:.3f} M params {row['seconds']} s | "
            f"elapsed {timedelta(seconds=int(elapsed))} eta {timedelta(seconds=int(elapsed / i * (len(tasks) - i)))}",
            flush=True,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: every bad input becomes one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        return make_groundtruth(args, argv)
    except (ConfigError, DataError, TrainingDiverged, ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
