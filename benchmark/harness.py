"""The benchmark plan: which (method, space, seed) runs `--method all` means, where each lives, how far each got.

A run is named by its label: a registered method, or a variant of one with fixed overrides (the diversity
control `ennas-beta0` is `ennas` with `ennas.beta = 0`: uniform sets without repeated operators, which
separates "no repeats" from ζ-based diversity in Fig. 2). Each run is its own folder
`<out>/<label>-<space>-seed<N>`; the plan is written to `<out>/plan.json` for the report.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.methods import METHODS
from ennas.core.config import ConfigError, RunConfig, resolve
from ennas.core.io import write_json
from spaces.registry import list_spaces

# Variants run beside the methods: label -> (method, overrides).
VARIANTS: dict[str, tuple[str, dict]] = {"ennas-beta0": ("ennas", {"ennas": {"beta": 0.0}})}
PAPER_SPACES = ("s1", "s2", "s3")  # what `--space all` means: the paper's Table 1
# Wall seconds of one run per label on this project's 2-core machine, one thread, two runs at a time: for the
# start line's estimate and the longest-first order only. proxy: the seed-0 reference runs with weight sharing
# (results/README.md, `--jobs 2`, nothing else running); a label without its own figure takes the preset's "*"
# (proxy: their mean).
RUN_SECONDS = {
    "smoke": {"*": 20.0},
    "proxy": {
        "spos": 792.0,
        "cream": 1230.0,
        "dna": 1188.0,
        "ennas": 1176.0,
        "ennas-wo-ds": 1122.0,
        "ennas-beta0": 1098.0,
        "*": 1101.0,
    },
}
PLANNED = {"method": "--method", "space": "--space", "seed": "--seeds"}  # settings the plan itself decides


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its label, the method it runs, space, seed, and the label's fixed overrides."""

    label: str
    method: str
    space: str
    seed: int
    overrides: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """The run's folder name."""
        return f"{self.label}-{self.space}-seed{self.seed}"


def known_labels() -> list[str]:
    """Every label `--method` accepts: the registered methods, then the variants."""
    return [*sorted(METHODS), *VARIANTS]


def parse_names(text: str, everything: list[str], known: list[str], what: str, also: str = "") -> list[str]:
    """`all` (-> `everything`), one name or a comma list, in order without repeats; unknown ones fail with the
    known ones (and `also`, other accepted words, in the message)."""
    if text == "all":
        return list(everything)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise ConfigError(f"unknown {what} {', '.join(unknown) or text!r}; known: {', '.join(known)}{also}")
    return list(dict.fromkeys(names))


def parse_labels(text: str) -> list[str]:
    """`all` (every method and variant), one label or a comma list."""
    return parse_names(text, known_labels(), known_labels(), "method", also=", all")


def parse_spaces(text: str) -> list[str]:
    """`all` (the paper's s1, s2, s3), one space or a comma list."""
    return parse_names(text, list(PAPER_SPACES), list_spaces(), "search space")


def parse_seeds(text: str) -> list[int]:
    """Seeds as `3`, `0-2` (inclusive) or comma lists of both (`0,2,5-6`), in order without repeats."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            low, dash, high = part.partition("-")
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ConfigError(f"--seeds takes numbers and ranges such as 0-2 or 0,3, got {text!r}") from None
        if first < 0 or last < first:
            raise ConfigError(f"--seeds range {part!r} must be ascending and non-negative")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


def plan_runs(labels: list[str], spaces: list[str], seeds: list[int]) -> list[PlannedRun]:
    """Every (label, space, seed), spaces outermost, then seeds, then labels (a seed's methods run together)."""
    runs = []
    for space in spaces:
        for seed in seeds:
            for label in labels:
                method, overrides = VARIANTS.get(label, (label, {}))
                runs.append(PlannedRun(label, method, space, seed, overrides))
    return runs


def merge_overrides(base: dict, top: dict) -> dict:
    """Nested overrides: `base` with `top`'s values on top (the user's --set wins over a variant's)."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = merge_overrides(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


def run_config(preset: dict, user: dict, run: PlannedRun) -> RunConfig:
    """One run's resolved configuration: the preset, then the label's fixed overrides, then the user's --set."""
    for key, flag in PLANNED.items():
        if key in user:  # the folder is named after the plan, so the plan must decide these
            raise ConfigError(f"--set {key}=... is chosen by the plan here; use {flag}")
    return resolve(preset, merge_overrides(run.overrides, user), method=run.method, space=run.space, seed=run.seed)


def discard_run(folder: Path) -> None:
    """Remove a run folder for `--fresh`; a non-empty folder without config.json is not a run's and is kept."""
    if not folder.exists():
        return
    if not (folder / "config.json").exists() and any(folder.iterdir()):
        raise ConfigError(f"--fresh: {folder} holds files but no config.json, so it is not a run folder; not removed")
    shutil.rmtree(folder)


def run_status(folder: Path, retrain_seeds: int = 1) -> str:
    """`done` (final.json with `retrain_seeds` retraining seeds), `failed` (error.json, from the last attempt),
    `partial` (started, or done with fewer retraining seeds) or `todo`."""
    final = folder / "final.json"
    if final.exists():
        held = len(json.loads(final.read_text()).get("retrain_seeds") or [None])  # older runs: their own one
        return "done" if held >= retrain_seeds else "partial"
    if (folder / "error.json").exists():
        return "failed"
    return "partial" if folder.exists() and any(folder.iterdir()) else "todo"


def write_plan(out: Path, preset: str, runs: list[PlannedRun]) -> None:
    """`plan.json`: the runs the report expects, with the preset (merged with the plans of earlier calls)."""
    path = out / "plan.json"
    old = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    rows = {(r["label"], r["space"], r["seed"]): r for r in old}
    for r in runs:
        rows[(r.label, r.space, r.seed)] = {
            "label": r.label,
            "method": r.method,
            "space": r.space,
            "seed": r.seed,
            "overrides": r.overrides,
        }
    write_json(path, {"preset": preset, "runs": sorted(rows.values(), key=lambda r: (r["space"], r["seed"]))})


def default_jobs(todo: int, device: str) -> int:
    """Runs at once when `--jobs` is not given: one per core on a CPU, one per GPU, never more than the runs.

    Measured here (README): five proxy runs one after another with 2 threads took 34.7 min (6.9 min each);
    two at a time with one thread each took 10.5-11.5 min per pair (5.5 min each), so one run per core is
    the faster use of this machine.
    """
    import torch

    if device != "cpu" and torch.cuda.is_available():
        slots = torch.cuda.device_count()
    else:
        slots = usable_cores()
    return max(1, min(slots, todo))


def choose_jobs(requested: int | None, pending: int, device: str, distributed: bool) -> int:
    """Runs at once: `--jobs` or `default_jobs`, never more than the runs left; one under torchrun, where every
    run uses all ranks."""
    if requested is not None and requested < 1:
        raise ConfigError("--jobs must be >= 1")
    if distributed:
        return 1
    return min(requested or default_jobs(pending, device), max(1, pending))


def worker_threads(jobs: int) -> int:
    """CPU threads of each run: one, alone or in a plan (`--set threads=N` to change it).

    The thread count reorders floating-point sums, so a lone run with every core and the same run inside a plan
    gave other numbers; and two processes with every core each were seen 10-50x slower on 2 cores (OpenMP
    oversubscription), a lone smoke run on a loaded machine six times slower than with one thread. One thread per
    run and one run per core (`--jobs` defaults to the core count) is both reproducible and the faster use of a
    machine here. `jobs` is kept for the callers' symmetry with choose_jobs.
    """
    del jobs
    return 1


def load_warning(device: str, pending: int) -> str | None:
    """A warning when CPU runs start on a machine other work already keeps busy (their timings will be noisy)."""
    if device == "cuda" or not pending or not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], usable_cores()
    if load < cores - 0.5:
        return None
    return (
        f"warning: this machine is already loaded (1-minute load average {load:.1f} on {cores} core(s)); the runs "
        "will be slower than estimated and their wall times noisy"
    )


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def expected_seconds(preset: str, label: str) -> float | None:
    """The measured wall seconds of one `label` run of `preset`, or None where this preset has no figure."""
    measured = RUN_SECONDS.get(preset)
    return None if measured is None else measured.get(label, measured["*"])


def longest_first(items: list, preset: str, label: Callable[[object], str] = lambda run: run.label) -> list:
    """`items` (PlannedRuns by default; `label` names each one's label) ordered by expected duration, longest first.

    With J workers taking runs in this order, the short runs fill the gaps at the end instead of one long run
    finishing alone (the classic longest-processing-time rule); ties keep the plan's order.
    """
    return sorted(items, key=lambda item: expected_seconds(preset, label(item)) or 0.0, reverse=True)


def makespan(durations: list[float], jobs: int) -> float:
    """Wall time of `durations` taken in order by `jobs` workers, each starting the next run when free."""
    workers = [0.0] * max(1, jobs)
    for d in durations:
        workers[workers.index(min(workers))] += d
    return max(workers)


def estimate(preset: str, labels: list[str], jobs: int) -> str:
    """The start line's expected duration of the runs still to do (`labels`), from measured per-label times."""
    if not labels:
        return "nothing to run"
    if preset not in RUN_SECONDS:
        return "duration unknown for this preset"
    durations = [expected_seconds(preset, label) for label in longest_first(labels, preset, label=str)]
    seconds = makespan(durations, jobs)
    took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return f"expected about {took} ({sum(durations) / 60:.1f} run-minutes measured on 2 cores)"


def start_line(preset: str, statuses: list[str], jobs: int, threads: int, out: Path, labels: list[str]) -> str:
    """How many runs the plan has, how far they got, how they will run and how long that should take (`labels`:
    each planned run's label, in the order of `statuses`)."""
    count = {s: statuses.count(s) for s in ("done", "partial", "failed", "todo")}
    todo = [label for label, status in zip(labels, statuses, strict=True) if status != "done"]
    failed = f", {count['failed']} failed before" if count["failed"] else ""
    return (
        f"plan: {len(statuses)} run{'s' * (len(statuses) != 1)} of preset {preset}: {count['done']} done, {count['partial']} partial{failed}, "
        f"{count['todo']} todo; {jobs} job(s) x {threads} thread(s); "
        f"{estimate(preset, todo, jobs)} -> {out}"
    )


def summary_table(rows: list[dict]) -> str:
    """The end-of-run table: label, space, seed, status, top1, MFLOPs, wall minutes, folder (and a failure's error)."""
    header = ["label", "space", "seed", "status", "top1", "MFLOPs", "wall min", "folder"]

    def cells(r: dict) -> list[str]:
        done = r["status"] == "done"
        minutes = "-" if r.get("minutes") is None else f"{r['minutes']:.1f}"
        minutes = "earlier" if done and r.get("minutes") is None else minutes  # finished before this call
        numbers = [f"{r['top1']:.2f}", f"{r['mflops']:.2f}"] if done else ["-", "-"]
        line = [r["label"], r["space"], str(r["seed"]), r["status"], *numbers, minutes, str(r["folder"])]
        return line + ([r["error"]] if r.get("error") else [])

    table = [header, *map(cells, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    # zip stops at the header's columns; a failure's error line follows unpadded
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "".join(f"  {e}" for e in row[len(header) :])
        for row in table
    ]
    return "\n".join(line.rstrip() for line in lines)
