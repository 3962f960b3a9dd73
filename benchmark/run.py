"""Run the whole pipeline (supernet -> search -> retrain) for one method or all of them.

    python -m benchmark.run --method spos --space s1 --preset smoke
    torchrun --nproc_per_node 8 -m benchmark.run --method ennas --space s2 --preset imagenet --data /data/ILSVRC2012

Stages whose outputs are already complete in --out are skipped; an interrupted stage resumes from its
last checkpoint. Bad input ends with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmark.methods import METHODS
from benchmark.preset import list_presets, load_preset
from ennas.core import distributed as dist
from ennas.core.config import ConfigError, parse_overrides, resolve
from ennas.core.context import RunContext
from ennas.core.loop import TrainingDiverged
from ennas.core.method import get_method
from ennas.core.pipeline import run_pipeline
from ennas.data import DataError
from spaces.registry import get_space, list_spaces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, documented in --help."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--method", default="all", help=f"one of {', '.join(sorted(METHODS))}, or 'all' (default)")
    p.add_argument("--space", default="s1", help=f"search space: {', '.join(list_spaces())} (default s1)")
    p.add_argument("--preset", default="proxy", help=f"{', '.join(list_presets())} or a JSON file (default proxy)")
    p.add_argument("--dataset", help="override the preset's dataset: fashion-mnist, imagenet or synthetic")
    p.add_argument("--data", help="dataset root folder (ImageNet: the folder holding train/ and val/)")
    p.add_argument("--out", type=Path, help="output folder (default runs/PRESET/METHOD-SPACE-seedN)")
    p.add_argument("--seed", type=int, default=0, help="fixes data order, path sampling and initialisation")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set supernet.epochs=10 --set distill.tau=2",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p.parse_args(argv)


def run_one(args: argparse.Namespace, method_name: str) -> dict:
    """Resolve the configuration of one method and run its pipeline."""
    overrides = parse_overrides(args.overrides)
    data = overrides.setdefault("data", {})
    if args.dataset:
        data["dataset"] = args.dataset
    if args.data:
        data["root"] = args.data
    cfg = resolve(load_preset(args.preset), overrides, method=method_name, space=args.space, seed=args.seed)
    preset_name = Path(args.preset).stem
    out = args.out or Path("runs") / preset_name / f"{method_name}-{cfg.space}-seed{cfg.seed}"
    if args.out and args.method == "all":
        out = args.out / f"{method_name}-{cfg.space}-seed{cfg.seed}"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.pick_device(cfg.device)
    dist.init(device)
    ctx = RunContext(cfg, out, device)
    final = run_pipeline(ctx, get_method(method_name)(ctx))
    if dist.is_main():
        print(
            f"[{method_name}] {final['arch_readable']}  top1 {final['top1']:.2f}  top5 {final['top5']:.2f}  "
            f"{final['mflops']:.2f} MFLOPs  search {final['search_cost_device_hours']:.3f} device-h  -> {out}"
        )
    return final


def main(argv: list[str] | None = None) -> int:
    """Entry point: every bad input becomes one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        get_space(args.space)
        names = sorted(METHODS) if args.method == "all" else [get_method(args.method).name]
        for name in names:
            run_one(args, name)
    except (ConfigError, DataError, TrainingDiverged, ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
