"""Performance benchmarks, measured as ratios side by side in one run (the machines are shared and noisy).

    python -m benchmark.perf --quick --json /tmp/perf.json    # every section, fewer repetitions
    python -m benchmark.perf probe_share cost_ratio           # named sections only
    python -m benchmark.perf cost_ratio --cost-rounds 40      # a fixed number of rounds, decided beforehand

Each comparison interleaves its contenders (A, B, A, B, ...) and reports the median of per-round ratios,
so slow phases of a shared machine hit both sides alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from spaces.registry import get_space
from spaces.supernet import SuperNet


def timed(fn: Callable[[], None], repeats: int) -> float:
    """Seconds per call of `fn`, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def interleaved(contenders: dict[str, Callable[[], None]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """Per-round seconds per call of each contender, measured in alternation."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn, repeats))
    return times


def train_step_fn(model: nn.Module, forward: Callable, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD training step (forward, backward, update) of `forward` on a fixed batch."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(forward(x), y).backward()
        opt.step()

    return step


def supernet_vs_static(space_name: str = "s1", batch: int = 128, rounds: int = 5, repeats: int = 5) -> dict:
    """Supernet single-path training throughput vs the same path extracted as a static network (goal <= 1.05)."""
    space = get_space(space_name, "proxy")
    torch.manual_seed(0)
    supernet = SuperNet(space, 10, 1).to(memory_format=torch.channels_last)
    arch = tuple(min(4, n - 1) for n in space.num_choices)  # k5e3 where present: a mid-sized path
    static = supernet.extract(arch)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = interleaved(
        {
            "supernet": train_step_fn(supernet, lambda v: supernet(v, arch), x, y),
            "static": train_step_fn(static, static, x, y),
        },
        rounds,
        repeats,
    )
    ratios = [s / t for s, t in zip(times["supernet"], times["static"])]
    return {
        "what": f"train step, {space_name}/proxy path {arch}, batch {batch}",
        "supernet_img_s": batch / statistics.median(times["supernet"]),
        "static_img_s": batch / statistics.median(times["static"]),
        "ratio_supernet_over_static": statistics.median(ratios),
        "goal": "<= 1.05",
    }


def spos_training_throughput(space_name: str = "s1", batch: int = 128, steps: int = 20) -> dict:
    """Images/s of SPOS supernet training (a new uniform path every step), channels_last vs contiguous."""
    from spaces.arch import sample_uniform

    space = get_space(space_name, "proxy")
    out = {}
    for layout in ("channels_last", "contiguous"):
        torch.manual_seed(0)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = SuperNet(space, 10, 1).to(memory_format=fmt)
        x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (batch,))
        rng = np.random.default_rng(0)
        paths = [sample_uniform(space, rng) for _ in range(steps + 1)]
        it = iter(paths)
        step = train_step_fn(net, lambda v, net=net, it=it: net(v, next(it)), x, y)
        out[f"{layout}_img_s"] = batch / timed(step, steps)
    out["what"] = f"SPOS supernet training, {space_name}/proxy, batch {batch}, {steps} steps"
    out["channels_last_speedup"] = out["channels_last_img_s"] / out["contiguous_img_s"]
    return out


def proxy_train_size() -> int:
    """Images in the proxy preset's training split (its `data.train_size`, or the whole split when unset)."""
    from benchmark.preset import load_preset
    from ennas.core.config import resolve
    from ennas.data import build_data

    d = resolve(load_preset("proxy"), method="spos", space="s1").data
    if d.train_size:
        return d.train_size
    return len(build_data(d.dataset, d.root, seed=0, search_size=d.search_size, recal_size=d.recal_size).train)


def proxy_context(method: str, batch: int, steps: int, overrides: dict | None = None):
    """A proxy-preset run context on a throw-away folder, with enough training images for `steps` batches."""
    import tempfile
    from pathlib import Path

    import benchmark.methods  # noqa: F401  (registers every method's config section before resolving)
    from benchmark.preset import load_preset
    from ennas.core.config import resolve
    from ennas.core.context import RunContext

    base = {
        "data": {"train_size": batch * (steps + 12) * 4},
        "supernet": {"batch_size": batch},
        "distill": {"start_epoch": 0},
        "progress": False,
    }
    for key, value in (overrides or {}).items():
        base.setdefault(key, {}).update(value)
    cfg = resolve(load_preset("proxy"), base, method=method, space="s1")
    return RunContext(cfg, Path(tempfile.mkdtemp(prefix="perf-")), torch.device("cpu"))


def cost_key(method: str, loop: str) -> str:
    """The figure's name for one loop of a method: the method's own name for its supernet loop."""
    return method if loop == "supernet" else f"{method}_{loop}"


def method_loops(methods: tuple[str, ...], ctx, batch: int, steps: int, batches: list) -> tuple[dict, dict]:
    """Every method's cost loops on one shared initial supernet, warmed up; and each loop's per-epoch work (s).

    The per-epoch work is the policy's `on_epoch_start` (EnNAS's diversity estimate), timed once.
    """
    import copy

    from benchmark.methods import METHODS
    from ennas.core.loop import train_step

    loops, per_epoch = {}, {}
    for name in methods:
        mctx = proxy_context(name, batch, steps)
        model = copy.deepcopy(ctx.supernet)
        method = METHODS[name](mctx)
        for key, loop in method.cost_loops(model).items():
            t0 = time.perf_counter()
            loop.policy.on_epoch_start(loop.model, 1)
            per_epoch[cost_key(name, key)] = time.perf_counter() - t0
            for step, (x, y) in enumerate(batches[:10]):  # warm-up; fills Cream's board
                train_step(mctx, loop, x, y, 1, 2 * step + 1)
            loops[cost_key(name, key)] = (mctx, loop, name)
    return loops, per_epoch


def cream_extras(mctx, loop, batch: tuple, step_s: float) -> dict:
    """Cream's meta step (amortised over the paper's interval of 200 steps) and its meta-matching choice alone."""
    x, y = batch
    x = x.contiguous(memory_format=torch.channels_last)
    student = loop.policy.sample_one(np.random.default_rng(0))
    t0 = time.perf_counter()
    loop.policy.meta_update(loop.model, x, y, student, mctx.cfg.supernet.lr)
    out = {"cream_meta_step_s": time.perf_counter() - t0}
    picks = []
    for _ in range(5):  # the student on every board entry's stored images
        t0 = time.perf_counter()
        loop.policy.pick(loop.model, student)
        picks.append(time.perf_counter() - t0)
    out["cream_pick_s"] = statistics.median(picks)
    out["cream_pick_share_of_step"] = out["cream_pick_s"] / step_s
    return out


def method_epoch_costs(
    methods: tuple[str, ...] = ("spos", "cream", "ennas-wo-ds", "ennas", "dna"), batch: int = 128, steps: int = 10
) -> dict:
    """Supernet cost of each method relative to SPOS's on the proxy preset (after the KD start).

    Every method's cost loops (`Method.cost_loops`: the supernet loop; DNA's teacher and blocks) step in
    alternation on the same batches. A loop's epoch = median step time x its steps per epoch (EnNAS: 1/m of
    the data) + its per-epoch work; a method's epoch is one epoch of each of its loops, and its stage is
    each loop's epochs at the preset's counts (DNA: teacher epochs + epochs per block). Cream's meta step is
    timed apart and amortised. Probe measurements are instrumentation, not training, and excluded.
    """
    from ennas.core.loop import steps_per_epoch, train_step

    ctx = proxy_context("spos", batch, steps)
    loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=batch, shuffle=False)
    batches = [(ctx.data.to_device(x, "cpu"), y) for _, (x, y) in zip(range(steps + 10), loader)]  # as train_step
    loops, per_epoch = method_loops(methods, ctx, batch, steps, batches)
    train_size = proxy_train_size()  # what a proxy epoch draws its share from
    times: dict[str, list[float]] = {key: [] for key in loops}
    for step, (x, y) in enumerate(batches[10:]):
        for key in loops if step % 2 else reversed(loops):
            mctx, loop, _ = loops[key]
            t0 = time.perf_counter()
            train_step(mctx, loop, x, y, 1, 2 * step + 1)  # odd steps: Cream's meta step is timed apart
            times[key].append(time.perf_counter() - t0)
    out: dict = {"what": f"s1/proxy, batch {batch}, {steps} interleaved steps per loop; epoch of {train_size} images"}
    for name in methods:
        out[f"{name}_epoch_s"] = out[f"{name}_stage_s"] = 0.0
    for key, (mctx, loop, name) in loops.items():
        step_s = statistics.median(times[key])
        epoch_steps = steps_per_epoch(dataclasses.replace(loop.plan, dataset=range(train_size)))
        epoch_s = step_s * epoch_steps + per_epoch[key]
        out.update({f"{key}_step_s": step_s, f"{key}_epoch_s": epoch_s, f"{key}_per_epoch_work_s": per_epoch[key]})
        if name == "cream":
            extras = cream_extras(mctx, loop, batches[-1], step_s)
            epoch_s += extras["cream_meta_step_s"] * epoch_steps / 200  # the paper's interval
            out.update(extras, cream_epoch_s=epoch_s)
        if key != name:
            out[f"{name}_epoch_s"] += epoch_s
        out[f"{name}_stage_s"] += loop.plan.epochs * epoch_s
        out[f"{key}_epochs"] = loop.plan.epochs
    for name in methods:
        out[f"{name}_over_spos"] = out[f"{name}_epoch_s"] / out["spos_epoch_s"]
        out[f"{name}_stage_over_spos"] = out[f"{name}_stage_s"] / out["spos_stage_s"]
    out["goals"] = "ennas <= 1.05 x spos (paper: equal); cream ~1.3 x spos (paper)"
    return out


def ensemble_solver(quick: bool) -> dict:
    """Ensemble-weight solve time, newton vs ECOS, at (B 256, C 10) and (B 256, C 1000), m 4 (ECOS once)."""
    from benchmark.solver_fixtures import solver_timings

    small = solver_timings(256, 10, 4, repeats=5, include_ecos=True)
    large = solver_timings(256, 1000, 4, repeats=5, include_ecos=not quick)
    return {"B256_C10_m4": small, "B256_C1000_m4": large, "unit": "seconds (median)"}


def solver_share(batch: int = 128, steps: int = 6) -> dict:
    """Share of the ensemble-weight solve in EnNAS training steps (s1 proxy, m 4), as the method logs it."""
    from benchmark.methods import METHODS
    from ennas.core.loop import train_step
    from ennas.core.method import supernet_loop

    ctx = proxy_context("ennas-wo-ds", batch, steps)
    method = METHODS["ennas-wo-ds"](ctx)
    loop = supernet_loop(ctx, method, ctx.supernet)
    loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=batch, shuffle=False)
    for step, (x, y) in zip(range(steps + 1), loader):
        if step == 1:
            method.on_epoch_start(ctx.supernet, 1)  # the first step warms up; the method's sums restart
        train_step(ctx, loop, x, y, 1, step)
    metrics = method.sums  # the method's own timing of its steps and solves (see ennas.method.ennas)
    return {
        "what": f"ennas-wo-ds steps, s1/proxy, batch {batch}, m 4 ({steps} steps after one warm-up)",
        "step_s": metrics["step_s"] / steps,
        "solve_s": metrics["solve_s"] / steps,
        "solver_share": metrics["solve_s"] / metrics["step_s"],
        "goal": "well under 1%",
    }


def jpeg_folder(root, images: int, size: tuple[int, int] = (320, 256), classes: int = 2):
    """An ImageNet-layout folder (train/<wnid>/, val/<wnid>/) of `images` seeded JPEGs, photo-like (smooth)."""
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", images), ("val", classes)):
        for i in range(n):
            folder = Path(root) / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize(size, Image.BILINEAR)
            image.save(folder / f"img_{i}.JPEG", quality=90)
    return Path(root)


def data_path(images: int = 512, resolution: int = 224, batch: int = 64, workers: int = 2, rounds: int = 3) -> dict:
    """ImageNet loading, images/s, old loader vs new vs device decode, on a generated JPEG folder (all end on the device).

    Old: a DataLoader built every epoch, workers decoding and shipping float32 (ToTensor + Normalize). New:
    one EpochLoader for every epoch (persistent workers), workers shipping uint8, normalised on the device.
    Device (data.decode=device): the same EpochLoader with workers shipping the files' bytes, decoded with
    decode_jpeg and augmented in `to_device` on the device (the CPU's main process where there is no GPU).
    One call is one epoch over the folder; the old loader's cost includes starting its workers each epoch.
    """
    import tempfile

    from torchvision import transforms as T

    from ennas.data import EpochLoader, View, build_data, make_loader

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = jpeg_folder(tempfile.mkdtemp(prefix="perf-jpeg-"), images)
    data = build_data("imagenet", root, resolution=resolution, search_size=0, recal_size=0)
    train = data.train
    uint8 = train.transform.transforms
    old_transform = T.Compose([*uint8[:-1], T.ToTensor(), T.Normalize(data.normalize.mean, data.normalize.std)])
    old_view = View(train.base, train.indices, old_transform)
    new_loader = EpochLoader(train, batch, seed=0, num_workers=workers)
    device_loader = EpochLoader(data.loader_view(train, "device"), batch, seed=0, num_workers=workers)
    epochs = iter(range(1 << 30))
    shipped: dict[str, float] = {}

    def old() -> None:
        for x, _ in make_loader(old_view, batch, sampler=range(len(train)), drop_last=True, num_workers=workers):
            shipped["old"] = x[0].numel() * x.element_size()
            x.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def new() -> None:
        for x, _ in new_loader.epoch(next(epochs)):
            shipped["new"] = x[0].numel() * x.element_size()
            data.to_device(x, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def on_device() -> None:
        for x, _ in device_loader.epoch(next(epochs)):
            shipped["device"] = x.flat.numel() / len(x)  # mean file size
            data.to_device(x, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = interleaved({"old": old, "new": new, "device": on_device}, rounds, 1)
    per_epoch = len(train) // batch * batch
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "what": f"{images} generated 320x256 JPEGs, train transforms at {resolution}, batch {batch}, "
        f"{workers} workers, to {device.type}, one epoch per call",
        "old_img_s": per_epoch / median["old"],
        "new_img_s": per_epoch / median["new"],
        "device_img_s": per_epoch / median["device"],
        "speedup_new_over_old": statistics.median([o / n for o, n in zip(times["old"], times["new"])]),
        "speedup_device_over_new": statistics.median([n / d for n, d in zip(times["new"], times["device"])]),
        "old_bytes_per_image": shipped.get("old", 0),
        "new_bytes_per_image": shipped.get("new", 0),
        "device_bytes_per_image": shipped.get("device", 0),
    }


def concurrent_runs(rounds: int = 2, preset: str = "smoke", overrides: tuple[str, ...] = ()) -> dict:
    """One run alone vs two at once through the harness (`--jobs 2`), each with the default threads.

    The default gives a lone run every core and splits the cores between concurrent runs, so two at once should
    each be at most about 2x slower than one alone on a machine with 2 cores (goal <= 2.2x; two processes with
    every core each were seen 10-50x slower here). Each side is a fresh `python -m benchmark.run` process
    (start-up included), alternated per round; the pair's time is the harness's wall time, i.e. the slower run's.
    """
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    base = [sys.executable, "-m", "benchmark.run", "--method", "spos", "--preset", preset, "--set", "progress=false"]
    base += [arg for item in overrides for arg in ("--set", item)]
    repo = Path(__file__).resolve().parents[1]

    def wall(args: list[str]) -> float:
        with tempfile.TemporaryDirectory(prefix="perf-concurrent-") as folder:
            t0 = time.perf_counter()
            proc = subprocess.run([*base, *args, "--out", folder], cwd=repo, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"benchmark.run failed: {proc.stderr.strip().splitlines()[-1:]}")
            return time.perf_counter() - t0

    alone, pair = [], []
    for _ in range(rounds):
        alone.append(wall(["--seeds", "0"]))
        pair.append(wall(["--seeds", "0-1", "--jobs", "2"]))
    ratios = [p / a for p, a in zip(pair, alone)]
    return {
        "what": f"spos {preset} runs in fresh processes, {rounds} alternated rounds, {os.cpu_count()} cores",
        "alone_s": statistics.median(alone),
        "pair_s": statistics.median(pair),
        "ratio_each_of_two_over_alone": statistics.median(ratios),
        "goal": "<= 2.2",
    }


SECTIONS: dict[str, Callable[[bool], dict]] = {
    "supernet_vs_static": lambda quick: supernet_vs_static(rounds=3 if quick else 7),
    "spos_training": lambda quick: spos_training_throughput(steps=8 if quick else 30),
    "ensemble_solver": ensemble_solver,
    "solver_share": lambda quick: solver_share(steps=4 if quick else 10),
    "method_epoch_cost": lambda quick: method_epoch_costs(steps=4 if quick else 12),
    "concurrent_runs": lambda quick: concurrent_runs(rounds=1 if quick else 3),
    "data_path": lambda quick: data_path(images=128 if quick else 512, rounds=3 if quick else 5),
    "cost_ratio": lambda quick: _cost_ratio(quick),
    "probe_share": lambda quick: _costs().probe_share(rounds=1 if quick else 3),
}


COST_ROUNDS: int | None = None  # --cost-rounds: cost_ratio's fixed number of rounds (None: until its goal is met)


def _cost_ratio(quick: bool) -> dict:
    """cost_ratio with a fixed number of rounds where --cost-rounds gives one, else repeated until its goal."""
    if COST_ROUNDS is not None:
        return _costs().cost_ratio(min_rounds=COST_ROUNDS, max_rounds=COST_ROUNDS)
    return _costs().cost_ratio(min_rounds=2 if quick else 4, max_rounds=3 if quick else 30)


def _costs():
    """benchmark.perf_costs, imported when one of its sections runs (it imports this module's helpers)."""
    from benchmark import perf_costs

    return perf_costs


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark section (or those named) and print one JSON object per section."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sections", nargs="*", help=f"subset of: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    p.add_argument("--json", help="also write all results to this file")
    p.add_argument(
        "--cost-rounds",
        type=int,
        help="cost_ratio: exactly this many rounds, no stopping on the interval (a fixed n decided beforehand)",
    )
    args = p.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.cost_rounds is not None and args.cost_rounds < 2:
        print(
            f"error: --cost-rounds must be at least 2 (an interval needs two rounds), not {args.cost_rounds}",
            file=sys.stderr,
        )
        return 2
    global COST_ROUNDS
    COST_ROUNDS, before = args.cost_rounds, COST_ROUNDS
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        for name in args.sections or SECTIONS:
            results[name] = SECTIONS[name](args.quick)
            print(json.dumps({name: results[name]}, default=float), flush=True)
    finally:
        COST_ROUNDS = before
    if args.json:
        from ennas.core.io import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
