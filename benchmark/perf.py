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


SECTIONS: dict[str, Callable[[bool], dict]] = {
    "supernet_vs_static": lambda quick: supernet_vs_static(rounds=3 if quick else 7),
    "spos_training": lambda quick: spos_training_throughput(steps=8 if quick else 30),
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
