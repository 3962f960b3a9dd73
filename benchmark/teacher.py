"""Train DNA's teacher once per dataset and stage layout, so DNA runs load it as the paper loads its pretrained one.

    python -m benchmark.teacher                                   # proxy preset, s1 layout -> results/proxy/dna_teacher/
    python -m benchmark.teacher --threads 1 --set dna.teacher=efficientnet_b0 --set dna.teacher_epochs=15
    python -m benchmark.teacher --preset smoke --out /tmp/teacher  # a tiny one, for a try

The teacher recipe is a DNA run's: the timm model `dna.teacher`, `dna.teacher_epochs` epochs of the retraining
recipe (optimiser, lr, batch, augmentation; cosine to 0, `retrain.*` may be set here) on the training split of
`--seed`, less the search splits of `--holdout-seeds`, so DNA runs of those seeds rate paths on images their
teacher never trained on. It writes `<out>/<dataset>.pt` (fp32 weights, fingerprint, accuracies, training device
seconds; what DNA runs load from `dna.teacher_dir`) and `<out>/<dataset>.json` (the same record with the command,
host, git commit, wall time, config and epoch records). Rerunning resumes an interrupted training from its
checkpoint in `<out>/<dataset>.work/`; a finished teacher is not trained again (--fresh trains it anew). Exit
status 0 when done, 2 for bad input (one line `error: ...`), 128 + signal when stopped (rerun to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from baselines.dna.source import TeacherSource, fingerprint_hash, shown, teacher_file, teacher_name
from baselines.dna.teacher import block_sizes, build_teacher, search_accuracy, train_teacher
from benchmark.execute import explain, is_user_error
from benchmark.harness import parse_seeds
from benchmark.preset import list_presets, load_preset
from ennas.core import distributed as dist
from ennas.core import preempt
from ennas.core.config import ConfigError, RunConfig, parse_overrides, resolve
from ennas.core.context import RunContext
from ennas.core.evaluate import evaluate
from ennas.core.io import read_json, save_torch, write_json
from ennas.core.pipeline import environment
from ennas.core.precision import amp_dtype, autocast
from ennas.core.resume import differences
from ennas.data import DataBundle, View, split_indices
from spaces.registry import list_spaces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, documented in --help."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.teacher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="proxy", help=f"{', '.join(list_presets())} or a JSON file (default proxy)")
    p.add_argument("--dataset", help="override the preset's dataset: fashion-mnist, imagenet or synthetic")
    p.add_argument("--data", help="dataset root folder")
    p.add_argument(
        "--space", default="s1", help=f"the search space whose blocks the stages align with: {', '.join(list_spaces())}"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="the seed whose training split the teacher trains on (default 0)"
    )
    p.add_argument(
        "--holdout-seeds",
        default="0-2",
        help="seeds whose search splits the teacher never trains on, e.g. 0-2 (default) or none",
    )
    p.add_argument("--out", type=Path, help="folder of <dataset>.pt/.json (default: dna.teacher_dir, where runs look)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: threads setting, else torch's)")
    p.add_argument("--fresh", action="store_true", help="discard a finished or partial teacher in --out and train anew")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p.parse_args(argv)


def teacher_config(args: argparse.Namespace) -> RunConfig:
    """The preset with the user's overrides, as a DNA run of `--space` and `--seed` would resolve it."""
    user = parse_overrides(args.overrides)
    data = user.setdefault("data", {})
    if args.dataset:
        data["dataset"] = args.dataset
    if args.data:
        data["root"] = args.data
    if args.threads is not None:
        user["threads"] = str(args.threads)
    return resolve(load_preset(args.preset), user, method="dna", space=args.space, seed=args.seed)


def output_dir(args: argparse.Namespace, cfg: RunConfig) -> Path:
    """`--out`, else the folder DNA runs look in (`dna.teacher_dir`)."""
    if args.out is not None:
        return args.out
    path = teacher_file(cfg)
    if path is None:
        raise ConfigError("dna.teacher_dir is none, so runs look nowhere; give --out")
    return path.parent


def holdout_seeds(text: str, own: int) -> list[int]:
    """The seeds whose search splits are held out: `--holdout-seeds` and always the teacher's own seed."""
    seeds = [] if text.strip().lower() in ("", "none") else parse_seeds(text)
    return sorted({own, *seeds})


def hold_out(data: DataBundle, seeds: list[int]) -> DataBundle:
    """The bundle with its training split less every search split of `seeds` (same size, a function of the seed)."""
    train = data.train
    searches = [split_indices(len(train.base), seed=s, search_size=len(data.search), recal_size=0)[1] for s in seeds]
    keep = ~torch.isin(train.indices, torch.cat(searches))
    return dataclasses.replace(data, train=View(train.base, train.indices[keep], train.transform))


# The settings a teacher's weights and record depend on (the rest of a preset, e.g. supernet.*, may change).
TEACHER_SETTINGS = ("scale", "space", "seed", "device", "amp", "channels_last", "dna.teacher", "dna.teacher_epochs")
TEACHER_SECTIONS = ("data.", "retrain.", "search.eval_")


def check_settings(stored: dict, cfg: RunConfig, seeds: list[int], what: Path) -> None:
    """One line if `what` was made with other settings of the teacher or held-out seeds than these."""
    diffs = [
        d
        for d in differences(stored["config"], cfg.to_dict())
        if d[0] in TEACHER_SETTINGS or d[0].startswith(TEACHER_SECTIONS)
    ]
    if stored["holdout_seeds"] != seeds:
        diffs.append(("--holdout-seeds", stored["holdout_seeds"], seeds))
    if diffs:
        named = "; ".join(f"{k} {a!r} there, {b!r} now" for k, a, b in diffs[:4])
        raise ConfigError(f"{what} was made with other settings ({named}); use another --out, or --fresh to train anew")


def finished(out: Path, dataset: str, cfg: RunConfig, seeds: list[int]) -> dict | None:
    """The record of a teacher already trained in `out` with these settings (None: none there yet)."""
    path = out / f"{dataset}.json"
    if not (out / f"{dataset}.pt").exists() or not path.exists():
        return None
    record = read_json(path)
    check_settings({"config": record["config"], "holdout_seeds": record["holdout"]["seeds"]}, cfg, seeds, path)
    return record


def train(ctx: RunContext, out: Path, seeds: list[int], command: str) -> dict:
    """Train (or resume) the teacher in the work folder, measure it, write <dataset>.pt and .json; its record."""
    t0, name, cfg = time.time(), teacher_name(ctx), ctx.cfg
    sizes = block_sizes(ctx.space, ctx.data.resolution)
    teacher, _, _, fp = build_teacher(ctx, sizes, TeacherSource("train", name))
    records = train_teacher(ctx, teacher)
    teacher.eval()
    with torch.no_grad(), autocast(ctx.device, amp_dtype(cfg.amp, ctx.device)):
        test = evaluate(teacher, ctx.shard_loader(ctx.data.test, cfg.search.eval_batch_size), ctx.device)
        search_top1 = search_accuracy(ctx, teacher)
    record = {
        "teacher": name,
        "fingerprint": fp,
        "fingerprint_hash": fingerprint_hash(fp),
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "search_top1": search_top1,  # on the fixed search batches a DNA run measures its teacher on
        "train_device_s": sum(r["device_s"] for r in records),
        "train_wall_s": sum(r["wall_s"] for r in records),
        "epochs": len(records),
        "train_images": len(ctx.data.train),
        "holdout": {"seeds": seeds, "search_size": len(ctx.data.search)},
    }
    state = {k: (v.float() if v.is_floating_point() else v).contiguous().cpu() for k, v in teacher.state_dict().items()}
    save_torch(out / f"{ctx.data.name}.pt", {**record, "state_dict": state})
    extra = {"command": command, "host": platform.node(), "wall_s": time.time() - t0, "finished": time.ctime()}
    extra |= {"environment": environment(), "config": cfg.to_dict(), "epoch_records": records}
    write_json(out / f"{ctx.data.name}.json", record | extra)
    shutil.rmtree(ctx.out, ignore_errors=True)  # the loop's checkpoint and log: the record holds what they said
    return record


def summary(record: dict, path: Path) -> str:
    """One line: the teacher, its accuracies and one-time cost, where it is and its fingerprint."""
    return (
        f"DNA teacher for {record['fingerprint']['dataset']}: {record['teacher']}, test top-1 {record['test_top1']:.2f} % "
        f"(top-5 {record['test_top5']:.2f} %), search-split top-1 {record['search_top1']:.2f} %, "
        f"{record['train_device_s']:.0f} device-s -> {shown(path)} (fingerprint {record['fingerprint_hash']})"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when the teacher is trained (or was), 2 for bad input, 128 + signal when stopped."""
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "benchmark.teacher", *(sys.argv[1:] if argv is None else argv)])
    preempt.install()
    try:
        cfg = teacher_config(args)
        out, dataset = output_dir(args, cfg), cfg.data.dataset
        work, seeds = out / f"{dataset}.work", holdout_seeds(args.holdout_seeds, args.seed)
        if args.fresh:
            for path in (out / f"{dataset}.pt", out / f"{dataset}.json"):
                path.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        done = finished(out, dataset, cfg, seeds)
        if done is not None:
            print(f"already trained, not again (--fresh to retrain): {summary(done, out / f'{dataset}.pt')}")
            return 0
        if (work / "settings.json").exists():  # a partial teacher continues only under its own settings
            check_settings(read_json(work / "settings.json"), cfg, seeds, work)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ctx = RunContext(cfg, work, dist.pick_device(cfg.device))
        ctx.data = hold_out(ctx.data, seeds)
        write_json(work / "settings.json", {"config": cfg.to_dict(), "holdout_seeds": seeds})
        record = train(ctx, out, seeds, command)
    except preempt.Preempted as err:
        print(str(err), file=sys.stderr)
        return 128 + err.signum
    except Exception as err:
        if args.debug or not is_user_error(err):
            raise
        print(f"error: {explain(err)}", file=sys.stderr)
        return 2
    print(summary(record, out / f"{dataset}.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
