"""One prepared check of a GPU machine: what each method's training costs there, in fp32 and bf16.

    python -m benchmark.gpu_check                      # on the GPU: about 2-4 minutes
    python -m benchmark.gpu_check --device cpu --tiny  # the same code at toy sizes (the tests run this)

Prints one JSON line per figure (`{"figure": ..., "value": ..., "unit": ..., ...}`):
- `supernet_img_s` and `peak_memory_gib` of every method and variant (each of its supernet-stage loops: DNA's
  teacher and blocks), per precision (`off` = fp32, `bf16`), on ImageNet-shaped synthetic input at the imagenet
  preset's space scale, after warm-up steps (KD on, Cream's board filled);
- `decode_img_s` of the ImageNet data path, old loader vs new vs device decode (`data.decode=device`:
  decode_jpeg and augmentation on the GPU; `benchmark.perf.data_path`), on generated JPEGs;
- `retrain_step_s` of one retraining step of a sampled architecture, per precision.
Nothing is written; a figure that fails is a line with `"error"`, and the exit status is 1 if any did.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("off", "bf16")


def emit(figure: str, value, unit: str, **context) -> dict:
    """Print one figure as a JSON line and return it."""
    line = {"figure": figure, "value": value, "unit": unit, **context}
    print(json.dumps(line, default=str), flush=True)
    return line


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_context(label: str, space: str, amp: str, batch: int, resolution: int, steps: int, device: torch.device):
    """A run context of `label` at the imagenet preset's scale on synthetic ImageNet-shaped data (a temp folder)."""
    from benchmark.harness import parse_labels, plan_runs, run_config
    from benchmark.preset import load_preset
    from ennas.core.context import RunContext

    (run,) = plan_runs(parse_labels(label), [space], [0])
    images = batch * (steps + 4) * 4  # EnNAS sees 1/m of the training set per epoch
    user = {
        "data": {
            "dataset": "synthetic",
            "search_size": batch,
            "recal_size": batch,
            "options": {
                "n_train": images,
                "n_test": batch,
                "num_classes": 1000,
                "in_chans": 3,
                "resolution": resolution,
            },
        },
        "supernet": {"batch_size": batch},
        "retrain": {"batch_size": batch},
        "distill": {"start_epoch": 0, "probe_images": batch},
        "amp": amp,
        "progress": False,
    }
    cfg = run_config(load_preset("imagenet"), user, run)
    return RunContext(cfg, Path(tempfile.mkdtemp(prefix="gpu-check-")), device), run


def timed_steps(ctx, loop, batches: list, warmup: int) -> tuple[float, float | None]:
    """Median seconds per training step after `warmup` steps, and the peak device memory (GiB) of the steps."""
    from ennas.core.loop import train_step

    for step, (x, y) in enumerate(batches[:warmup]):
        train_step(ctx, loop, x, y, 1, step)
    synchronize(ctx.device)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    times = []
    for step, (x, y) in enumerate(batches[warmup:], start=warmup):
        t0 = time.perf_counter()
        train_step(ctx, loop, x, y, 1, step)
        synchronize(ctx.device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.device.type == "cuda" else None
    return statistics.median(times), peak


def method_figures(label: str, args, device: torch.device) -> None:
    """Supernet-stage throughput and peak memory of one method or variant, per precision."""
    from ennas.core.method import get_method
    from ennas.data import make_loader

    for amp in PRECISIONS:
        ctx, run = check_context(label, args.space, amp, args.batch, args.resolution, args.steps, device)
        loader = make_loader(ctx.data.train, args.batch, drop_last=True)
        batches = [b for _, b in zip(range(args.warmup + args.steps), loader)]
        method = get_method(run.method)(ctx)
        for name, loop in method.cost_loops(ctx.supernet).items():
            loop.policy.on_epoch_start(loop.model, 1)
            step_s, peak = timed_steps(ctx, loop, batches, args.warmup)
            common = {"method": label, "loop": name, "amp": amp, "batch": args.batch, "resolution": args.resolution}
            emit("supernet_img_s", args.batch / step_s, "img/s", **common)
            emit("peak_memory_gib", peak, "GiB", **common)


def retrain_figures(args, device: torch.device) -> None:
    """One retraining step of a sampled architecture of the space, per precision."""
    from ennas.core.retrain import plain_loop
    from ennas.data import make_loader
    from spaces.arch import sample_uniform
    from spaces.supernet import build_network

    for amp in PRECISIONS:
        ctx, _ = check_context("spos", args.space, amp, args.batch, args.resolution, args.steps, device)
        arch = sample_uniform(ctx.space, np.random.default_rng(0))
        net = build_network(ctx.space, arch, ctx.data.num_classes, ctx.data.in_chans).to(device)
        loop = plain_loop(ctx, "retrain", net, ctx.cfg.retrain)
        batches = [b for _, b in zip(range(args.warmup + 1), make_loader(ctx.data.train, args.batch, drop_last=True))]
        step_s, _ = timed_steps(ctx, loop, batches, args.warmup)
        emit("retrain_step_s", step_s, "s", amp=amp, batch=args.batch, resolution=args.resolution)


def decode_figures(args) -> None:
    """The ImageNet data path's images/s, old loader vs new vs device decode, on generated JPEGs."""
    from benchmark.perf import data_path

    found = data_path(
        images=args.jpegs, resolution=args.resolution, batch=args.batch, workers=args.workers, rounds=args.rounds
    )
    for loader in ("old", "new", "device"):
        emit("decode_img_s", found[f"{loader}_img_s"], "img/s", loader=loader, what=found["what"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="toy sizes (resolution 32, batch 4, 1 step): a code check")
    p.add_argument("--methods", default="all", help="labels as for benchmark.run --method (default all)")
    p.add_argument("--space", default="s1")
    p.add_argument("--batch", type=int, default=64, help="per-GPU batch (default 64)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--steps", type=int, default=8, help="timed steps per loop and precision (default 8)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jpegs", type=int, default=512, help="generated JPEGs for the data path (default 512)")
    p.add_argument("--workers", type=int, default=8, help="loader workers for the data path (default 8)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.tiny:
        args.resolution, args.batch, args.steps, args.warmup = 32, 4, 1, 2
        args.jpegs, args.workers, args.rounds = 16, 0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Every figure, one JSON line each; exit status 1 if any figure failed (its line says why)."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA GPU here; use --device cpu --tiny for a code check")
        return 2
    import benchmark.methods  # noqa: F401  (registers every method)
    from benchmark.harness import parse_labels

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        emit("device", torch.cuda.get_device_name(device), "name", torch=torch.__version__, cuda=torch.version.cuda)
    failed = False
    jobs = [(f"method {m}", lambda m=m: method_figures(m, args, device)) for m in parse_labels(args.methods)]
    jobs += [("retrain", lambda: retrain_figures(args, device)), ("decode", lambda: decode_figures(args))]
    for name, job in jobs:
        try:
            job()
        except Exception as err:  # one figure's failure must not hide the others
            failed = True
            emit(name, None, "", error=f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
