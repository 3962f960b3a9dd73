"""Which teacher a DNA run uses, and whether a saved one fits it: plain data and one-line refusals.

A run's teacher comes, in this order, from the run's own teacher.pt (a resumed run keeps its teacher), a local
checkpoint of any timm model (`dna.teacher_checkpoint`, e.g. a pretrained EfficientNet-B7 file the user has),
the teacher trained once for the dataset by `python -m benchmark.teacher` (`<dna.teacher_dir>/<dataset>.pt`,
committed under results/<scale>/, as the paper loads its pretrained teacher), or else it is trained inside
the run. A saved teacher carries a fingerprint of what its weights and stages mean (dataset, classes, input,
model, the stride-adapted stage layout DNA's blocks are cut against); a run refuses one that is not its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ennas.core.config import ConfigError, RunConfig
from ennas.core.io import load_torch

if TYPE_CHECKING:
    from ennas.core.context import RunContext

# "" picks these: EfficientNet-B0 has the stage layout the ImageNet mobile spaces copy (24/40/80/112/192 at
# strides 4/8/16/16/32); at 28 px MobileNetV2 (2.2M parameters, 10x a proxy path) costs about 4 SPOS steps
# per step on a CPU (EfficientNet-B0: about 5).
DEFAULT_TEACHERS = {"imagenet": "efficientnet_b0", "proxy": "mobilenetv2_100"}


REPO_ROOT = Path(__file__).resolve().parents[2]  # a relative dna.teacher_dir is read from here
OPT_OUT = ("", "none")  # dna.teacher_dir values that mean: no trained-once teacher, train one inside the run


def teacher_name(ctx: RunContext) -> str:
    """The timm model of a teacher trained here: `dna.teacher` or the default for the run's scale."""
    return ctx.cfg.options("dna").teacher or DEFAULT_TEACHERS[ctx.cfg.scale]


# --- which teacher a run uses ---------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherSource:
    """Where a run's teacher comes from, decided before it is built."""

    # "run" (its own teacher.pt), "checkpoint" (dna.teacher_checkpoint), "committed" (dna.teacher_dir) or "train"
    kind: str
    model: str  # timm model name
    path: Path | None = None  # the file (train: the trained-once teacher looked for, if any)
    saved: dict = dataclasses.field(default_factory=dict, repr=False)  # the file's record (run, committed: + weights)


def teacher_file(cfg: RunConfig) -> Path | None:
    """`<dna.teacher_dir>/<dataset>.pt` ({scale} filled in; relative to the repository root), or None (opted out)."""
    folder = cfg.options("dna").teacher_dir.strip()
    if folder.lower() in OPT_OUT:
        return None
    path = Path(folder.replace("{scale}", cfg.scale))
    return (path if path.is_absolute() else REPO_ROOT / path) / f"{cfg.data.dataset}.pt"


def file_record(path: Path) -> dict:
    """A checkpoint's entries besides its weights, memory-mapped (not read whole); {} for a foreign format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # safetensors, npz, a legacy or pickled-object file: timm's loader reads it, with no record
        return {}
    if not isinstance(state, dict) or "state_dict" not in state:
        return {}  # a bare state dict
    return {k: v for k, v in state.items() if k != "state_dict"}


def teacher_source(ctx: RunContext) -> TeacherSource:
    """The run's own teacher.pt, else `dna.teacher_checkpoint`, else the trained-once teacher, else training one.

    A run that began training its teacher before (teacher_checkpoint.pt) goes on with it, so resuming never
    switches teachers. The model is `dna.teacher` where set, else the saved teacher's, else the scale's default.
    """
    opts = ctx.cfg.options("dna")
    done = ctx.file("teacher.pt")
    if done.exists():
        saved = load_torch(done)
        return TeacherSource("run", saved["teacher"], done, saved)
    if opts.teacher_checkpoint:
        path = Path(opts.teacher_checkpoint)
        if not path.is_file():
            raise ConfigError(f"dna.teacher_checkpoint {path}: no such file")
        saved = file_record(path)
        return TeacherSource("checkpoint", opts.teacher or saved.get("teacher") or teacher_name(ctx), path, saved)
    path = teacher_file(ctx.cfg)
    if path is not None and path.is_file() and not ctx.file("teacher_checkpoint.pt").exists():
        saved = load_torch(path)
        return TeacherSource("committed", opts.teacher or saved.get("teacher") or teacher_name(ctx), path, saved)
    return TeacherSource("train", teacher_name(ctx), path)


def fingerprint(ctx: RunContext, model: str, stages: dict | None = None) -> dict:
    """What a teacher's weights and stages mean to a run: dataset, classes, input, model and (`stages`) the layout."""
    data = ctx.data
    base = {"dataset": data.name, "num_classes": data.num_classes, "in_chans": data.in_chans}
    return base | {"resolution": data.resolution, "model": model} | (stages or {})


def fingerprint_hash(fp: dict) -> str:
    """A short stable hash of a fingerprint, for log lines and final.json."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def check_fingerprint(source: TeacherSource, expected: dict) -> None:
    """One ConfigError line if the source's saved fingerprint differs from the run's on `expected`'s keys."""
    saved = source.saved.get("fingerprint")
    if saved is None:
        if source.kind == "committed":
            raise ConfigError(f"{source.path} is not a teacher written by python -m benchmark.teacher (no fingerprint)")
        return  # a foreign checkpoint, or a teacher.pt from before fingerprints: its weights loading is the check
    diffs = [
        f"{k} {json.dumps(saved.get(k))} there, {json.dumps(v)} here" for k, v in expected.items() if saved.get(k) != v
    ]
    if not diffs:
        return
    fix = {
        "committed": "train one for this setup with python -m benchmark.teacher (this run's preset, dataset, space "
        "and --set values), or set dna.teacher_dir=none to train one inside the run",
        "checkpoint": "give dna.teacher_checkpoint a teacher trained for this setup",
        "run": "this folder was made with another teacher; use another --out or --fresh",
    }[source.kind]
    raise ConfigError(f"{source.path} is a DNA teacher for another setup ({'; '.join(diffs[:3])}); {fix}")


def shown(path: Path) -> str:
    """A teacher file as the log and final.json name it: relative to the repository root where it lies inside."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def training_note(ctx: RunContext, source: TeacherSource) -> str:
    """The one line a run prints when it trains its own teacher: why, and what that is not."""
    name, epochs = source.model, ctx.cfg.options("dna").teacher_epochs
    why = (
        "dna.teacher_dir=none"
        if source.path is None
        else f"no trained-once DNA teacher for {ctx.data.name} at {shown(source.path)}"
    )
    count = f"{epochs} epoch{'s' * (epochs != 1)}"
    line = f"note: {why}; training one ({name}, {count}) inside this run, its cost logged as teacher_device_s"
    if ctx.cfg.scale == "imagenet":
        return line + "; from scratch, it is not the paper's pretrained EfficientNet-B7 (see dna.teacher_checkpoint)"
    return line + " (python -m benchmark.teacher trains one once)"


def loaded_line(info: dict) -> str:
    """The one line a run prints when it loads its teacher: which, its fingerprint, accuracy and one-time cost."""
    test = info["teacher_test_top1"]
    cost = info["teacher_train_device_s"]
    return (
        f"DNA teacher: {info['teacher_source']} ({info['teacher']}, fingerprint {info['teacher_fingerprint']}, "
        f"test top-1 {'unknown' if test is None else f'{test:.2f} %'}, search-split top-1 "
        f"{info['teacher_search_acc']:.2f} %, trained once in {'unknown' if cost is None else f'{cost:.0f}'} "
        "device-s); not trained in this run"
    )


def holdout_note(ctx: RunContext, saved: dict) -> str | None:
    """A note when a trained-once teacher may have trained on this run's search split (another seed or size)."""
    held = saved.get("holdout") or {}
    if ctx.cfg.seed in held.get("seeds", ()) and held.get("search_size") == len(ctx.data.search):
        return None
    return (
        f"note: the DNA teacher trained on some of this run's search-split images (it holds out the search splits of "
        f"seeds {held.get('seeds')} at search_size {held.get('search_size')}; this run: seed {ctx.cfg.seed}, "
        f"search_size {len(ctx.data.search)})"
    )
