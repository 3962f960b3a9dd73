"""Performance benchmarks, measured as ratios side by side in one run (the machines are shared and noisy).

    python -m benchmark.perf [--quick] [--json results/perf.json]

Each comparison interleaves its contenders (A, B, A, B, ...) and reports the median of per-round ratios,
so slow phases of a shared machine hit both sides alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

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
    import numpy as np

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


def proxy_context(method: str, batch: int, steps: int, overrides: dict | None = None):
    """A proxy-preset run context on a throw-away folder, with enough training images for `steps` batches."""
    import tempfile
    from pathlib import Path

    from ennas.config import resolve
    from ennas.context import RunContext

    base = {
        "data": {"train_size": batch * (steps + 12) * 4},
        "supernet": {"batch_size": batch},
        "distill": {"start_epoch": 0},
        "progress": False,
    }
    for key, value in (overrides or {}).items():
        base.setdefault(key, {}).update(value)
    cfg = resolve("proxy", base, method=method, space="s1")
    return RunContext(cfg, Path(tempfile.mkdtemp(prefix="perf-")), torch.device("cpu"))


def dna_loops(mctx, model: nn.Module) -> dict:
    """DNA's training loops on `model`: one per block (frozen eval teacher) and the teacher's own training.

    The teacher trained here is a copy, so the blocks' teacher stays frozen in eval mode as in a real run;
    its weights are untrained, which changes no cost.
    """
    import copy

    from baselines.dna_teacher import teacher_loop
    from ennas.methods import get_method

    method = get_method("dna")(mctx)
    method.build()
    trainee = copy.deepcopy(method.teacher).train()
    method.teacher.eval().requires_grad_(False)
    loops = {f"dna_block{i}": method.block_loop(model, i) for i in range(len(method.ranges))}
    loops["dna_teacher"] = teacher_loop(mctx, trainee)
    return loops


def method_epoch_costs(
    methods: tuple[str, ...] = ("spos", "cream", "ennas-wo-ds", "ennas", "dna"), batch: int = 128, steps: int = 10
) -> dict:
    """Supernet epoch cost of each method relative to SPOS's on the proxy preset (after KD start).

    Steps of all methods are interleaved on the same batches; a method's epoch cost = median step time x
    steps per epoch (EnNAS: 1/m of the data) + its per-epoch work (EnNAS's diversity estimate) + Cream's
    meta step amortised over its interval. Probe measurements (teacher/student logging) are excluded:
    they are instrumentation, not training. DNA's epoch is one pass of every block over the data (blocks
    train one after another, each step running the frozen teacher up to the block's target stage); the
    teacher's own training epoch is reported apart, and `dna_stage_over_spos` compares whole supernet
    stages at the proxy preset's epoch counts (teacher + blocks vs SPOS's supernet epochs).
    """
    import copy

    import baselines  # noqa: F401
    from ennas.engine import Loop, train_step
    from ennas.methods import get_method
    from ennas.optim import linear_schedule, supernet_optimizer

    ctx = proxy_context("spos", batch, steps)
    loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=batch, shuffle=False)
    batches = [b for _, b in zip(range(steps + 10), loader)]
    loops, per_epoch = {}, {}
    for name in methods:
        mctx = proxy_context(name, batch, steps)
        model = copy.deepcopy(ctx.supernet)
        if name == "dna":
            named = dna_loops(mctx, model)
        else:
            method = get_method(name)(mctx)
            opt = supernet_optimizer(list(model.parameters()), mctx.cfg.supernet)
            loop = Loop(
                name,
                model,
                method,
                opt,
                linear_schedule(opt, 10_000),
                mctx.data.train,
                batch,
                2,
                fraction=method.epoch_fraction(),
            )
            t0 = time.perf_counter()
            method.on_epoch_start(model, 1)
            per_epoch[name] = time.perf_counter() - t0
            named = {name: loop}
        for key, loop in named.items():
            for step, (x, y) in enumerate(batches[:10]):  # warm-up; fills Cream's board
                train_step(mctx, loop, x, y, 1, 2 * step + 1)
            loops[key] = (mctx, loop)
    contenders = tuple(loops)
    times: dict[str, list[float]] = {key: [] for key in contenders}
    for step, (x, y) in enumerate(batches[10:]):
        order = contenders if step % 2 else tuple(reversed(contenders))
        for key in order:
            mctx, loop = loops[key]
            t0 = time.perf_counter()
            train_step(mctx, loop, x, y, 1, 2 * step + 1)  # odd steps: Cream's meta step is timed apart
            times[key].append(time.perf_counter() - t0)
    full_steps = len(ctx.data.train) // batch
    out: dict = {
        "what": f"s1/proxy, batch {batch}, {steps} interleaved steps per method, epoch = {full_steps} SPOS steps"
    }
    for key in contenders:
        mctx, loop = loops[key]
        step_s = statistics.median(times[key])
        out[f"{key}_step_s"] = step_s
        out[f"{key}_epoch_s"] = step_s * full_steps * loop.fraction + per_epoch.get(key, 0.0)
        if key in per_epoch:
            out[f"{key}_per_epoch_work_s"] = per_epoch[key]
    if "cream" in loops:
        mctx, loop = loops["cream"]
        x, y = batches[-1]
        x = x.contiguous(memory_format=torch.channels_last)
        student = loop.method.sample_one(mctx.path_rng(1, 0))
        t0 = time.perf_counter()
        loop.method.meta_update(loop.model, x, y, student, mctx.cfg.supernet.lr)
        out["cream_meta_step_s"] = time.perf_counter() - t0
        out["cream_epoch_s"] += out["cream_meta_step_s"] * full_steps / 200  # the paper's meta interval
        picks = []
        for _ in range(5):  # the meta-matching choice alone: the student on every board entry's stored images
            t0 = time.perf_counter()
            loop.method.pick(loop.model, student)
            picks.append(time.perf_counter() - t0)
        out["cream_pick_s"] = statistics.median(picks)
        out["cream_pick_share_of_step"] = out["cream_pick_s"] / out["cream_step_s"]
    if "dna" in methods:
        blocks = [key for key in contenders if key.startswith("dna_block")]
        out["dna_epoch_s"] = sum(out[f"{key}_epoch_s"] for key in blocks)
    for name in methods:
        out[f"{name}_over_spos"] = out[f"{name}_epoch_s"] / out["spos_epoch_s"]
    if "dna" in methods:
        cfg = loops["dna_teacher"][0].cfg
        out["dna_teacher_over_spos"] = out["dna_teacher_epoch_s"] / out["spos_epoch_s"]
        dna_stage = (
            cfg.distill.teacher_epochs * out["dna_teacher_epoch_s"] + cfg.distill.block_epochs * out["dna_epoch_s"]
        )
        out["dna_stage_over_spos"] = dna_stage / (cfg.supernet.epochs * out["spos_epoch_s"])
        out["dna_stage_what"] = (
            f"{cfg.distill.teacher_epochs} teacher epochs + {cfg.distill.block_epochs} epochs per block "
            f"vs {cfg.supernet.epochs} SPOS supernet epochs"
        )
    out["goals"] = "ennas <= 1.05 x spos (paper: equal); cream ~1.3 x spos (paper)"
    return out


def ensemble_solver(quick: bool) -> dict:
    """Ensemble-weight solve time, newton vs ECOS, at (B 256, C 10) and (B 256, C 1000), m 4 (ECOS once)."""
    from ennas.ensemble import solver_timings

    small = solver_timings(256, 10, 4, repeats=5, include_ecos=True)
    large = solver_timings(256, 1000, 4, repeats=5, include_ecos=not quick)
    return {"B256_C10_m4": small, "B256_C1000_m4": large, "unit": "seconds (median)"}


def solver_share(batch: int = 128, steps: int = 6) -> dict:
    """Share of the ensemble-weight solve in one EnNAS training step (s1 proxy, m 4)."""
    import baselines  # noqa: F401
    from ennas import ensemble
    from ennas.engine import Loop, train_step
    from ennas.methods import get_method
    from ennas.optim import linear_schedule, supernet_optimizer

    ctx = proxy_context("ennas-wo-ds", batch, steps)
    method = get_method("ennas-wo-ds")(ctx)
    opt = supernet_optimizer(list(ctx.supernet.parameters()), ctx.cfg.supernet)
    loop = Loop("supernet", ctx.supernet, method, opt, linear_schedule(opt, 10_000), ctx.data.train, batch, 2)
    loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=batch, shuffle=False)
    solve_times: list[float] = []
    original = ensemble.ensemble_weights

    def timed_solve(*args, **kwargs):
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        solve_times.append(time.perf_counter() - t0)
        return result

    import ennas.ennas_method as em

    em.ensemble_weights = timed_solve
    try:
        step_times = []
        for step, (x, y) in zip(range(steps + 1), loader):
            t0 = time.perf_counter()
            train_step(ctx, loop, x, y, 1, step)
            step_times.append(time.perf_counter() - t0)
    finally:
        em.ensemble_weights = original
    step_s, solve_s = statistics.median(step_times[1:]), statistics.median(solve_times[1:])
    return {
        "what": f"ennas step, s1/proxy, batch {batch}, m 4",
        "step_s": step_s,
        "solve_s": solve_s,
        "solver_share": solve_s / step_s,
        "goal": "well under 1%",
    }


SECTIONS: dict[str, Callable[[bool], dict]] = {
    "supernet_vs_static": lambda quick: supernet_vs_static(rounds=3 if quick else 7),
    "spos_training": lambda quick: spos_training_throughput(steps=8 if quick else 30),
    "ensemble_solver": ensemble_solver,
    "solver_share": lambda quick: solver_share(steps=4 if quick else 10),
    "method_epoch_cost": lambda quick: method_epoch_costs(steps=4 if quick else 12),
}


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark section (or those named) and print one JSON object per section."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sections", nargs="*", help=f"subset of: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    p.add_argument("--json", help="also write all results to this file")
    args = p.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for name in args.sections or SECTIONS:
        results[name] = SECTIONS[name](args.quick)
        print(json.dumps({name: results[name]}, default=float), flush=True)
    if args.json:
        from ennas.results import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
