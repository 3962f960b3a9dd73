"""Calibration study of the Fashion-MNIST proxy (issue 13): step cost, supernet path accuracy, ground truth.

Standalone and resumable: every finished measurement appends one JSON line to a results file, and a
rerun skips what is already there. Always one thread (the machine is shared).

    python -m benchmark.calibrate cost --layouts base,s2 --out results/proxy/cost.jsonl
    python -m benchmark.calibrate supernet --layout s2 --steps 2000 --evals 500,1000,2000 --tag s2_lin
    python -m benchmark.calibrate gt --layout s2 --band 0.3,0.5 --n 6 --seeds 0,1 --epochs 3 --tag pilot
    python -m benchmark.calibrate tau --layout s2 --ckpt results/proxy/ckpt/X.pt --gt results/proxy/gt.jsonl

Data: the project's splits (build_data("fashion-mnist", seed=0)), with the same augmentation as
TensorTransform (pad-2 random crop, horizontal flip, normalise) applied batch-wise for speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

from ennas.data import build_data  # noqa: E402
from ennas.datasets import FASHION_MNIST_MEAN, FASHION_MNIST_STD  # noqa: E402
from ennas.evaluate import evaluate, recalibrate_bn, score_path  # noqa: E402
from ennas.optim import param_groups  # noqa: E402
from spaces.arch import encode, sample_uniform  # noqa: E402
from spaces.flops import FlopsTable  # noqa: E402
from spaces.ops import MBConv, init_weights  # noqa: E402
from spaces.registry import S1_OPS, SpaceSpec, stage_layers  # noqa: E402
from spaces.supernet import SuperNet, build_network  # noqa: E402

RESULTS = Path("results/proxy")

# name -> (stem chs, stem stride, ds chs, stages ((out, stride), ...), depths, tail (conv, head))
LAYOUTS = {
    # today's proxy: 28x28 first stage input, 4 of 8 layers change shape
    "base": (16, 1, 16, ((24, 2), (32, 2), (48, 1), (64, 2)), (2, 2, 2, 2), (96, 192)),
    # stem stride 2: first stage at 14x14
    "s2": (16, 2, 16, ((24, 1), (32, 2), (48, 1), (64, 2)), (2, 2, 2, 2), (96, 192)),
    # stem stride 2, ds -> 24 so stage 1 keeps shape: 3 of 8 change shape
    "s2w": (16, 2, 24, ((24, 1), (32, 2), (48, 1), (64, 2)), (2, 2, 2, 2), (96, 192)),
    # stem stride 2, 3 stages x 3 layers, ds -> 24: 2 of 9 change shape
    "s2w3x3": (16, 2, 24, ((24, 1), (40, 2), (64, 2)), (3, 3, 3), (96, 192)),
    # stem stride 2, 4 stages x 3 (ds -> 24): 3 of 12 change shape
    "s2w4x3": (16, 2, 24, ((24, 1), (32, 2), (48, 1), (64, 2)), (3, 3, 3, 3), (96, 192)),
    # stem stride 2, 3 stages, 2 / 3 / 3 layers
    "s2w233": (16, 2, 24, ((24, 1), (40, 2), (64, 2)), (2, 3, 3), (96, 192)),
    # stem stride 2, every stage at 7x7 or 4x4: 4 of 8 change shape
    "s2d": (16, 2, 16, ((24, 2), (32, 1), (48, 2), (64, 1)), (2, 2, 2, 2), (96, 192)),
    # stem stride 2, ds -> 24 at 14x14, 3 stages x 3 at 7,7,4: 3 of 9 change shape
    "s2r3": (16, 2, 24, ((32, 2), (48, 1), (64, 2)), (3, 3, 3), (96, 192)),
    # stem stride 2, ds -> 24, 2 stages x 4 at 7, 4: 2 of 8 change shape
    "s2r2": (16, 2, 24, ((40, 2), (64, 2)), (4, 4), (96, 192)),
    # stem stride 2, ds 16, stage 1 keeps shape at 14x14 (16 ch), then 7, 4: 2 of 8 change shape
    "s2k": (16, 2, 16, ((16, 1), (32, 2), (64, 2)), (2, 3, 3), (96, 192)),
    # stem stride 1 but ds->24 and fewer shape-changing layers, for comparison with base
    "s1w3x3": (16, 1, 24, ((24, 2), (40, 2), (64, 2)), (3, 3, 3), (96, 192)),
}


def make_space(layout: str) -> SpaceSpec:
    stem_chs, stride, ds, stages, depths, (conv, head) = LAYOUTS[layout]
    stem = {"chs": stem_chs, "stride": stride, "act": "swish", "ds": ds, "ds_se": 0.0}
    layers = stage_layers(ds, stages, depths, S1_OPS, identity=True)
    tail = {"conv_chs": conv, "head_chs": head, "head_after_pool": False, "act": "swish"}
    return SpaceSpec("s1", "proxy", 28, stem, layers, tail)


def shape_changing(space: SpaceSpec) -> int:
    return sum(1 for layer in space.layers if layer.stride != 1 or layer.in_chs != layer.out_chs)


# ---- data: whole splits as float tensors, batch-wise augmentation ----


class Data:
    def __init__(self, seed: int = 0):
        bundle = build_data("fashion-mnist", seed=seed)
        self.bundle = bundle
        mean, std = FASHION_MNIST_MEAN[0], FASHION_MNIST_STD[0]

        def tensors(view):
            x = view.base.images[view.indices].float().div_(255).sub_(mean).div_(std)
            return x, view.base.targets[view.indices].long()

        self.train_x, self.train_y = tensors(bundle.train)
        self.search_x, self.search_y = tensors(bundle.search)
        self.recal_x, self.recal_y = tensors(bundle.recal)
        self.test_x, self.test_y = tensors(bundle.test)
        self.pad_value = (0.0 - mean) / std  # zero padding of the raw image, as TensorTransform

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = len(x)
        p = 2
        xp = nn.functional.pad(x, (p,) * 4, value=self.pad_value)
        off = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
        out = torch.empty_like(x)
        for i in range(2 * p + 1):
            for j in range(2 * p + 1):
                m = (off[:, 0] == i) & (off[:, 1] == j)
                if m.any():
                    out[m] = xp[m, :, i : i + 28, j : j + 28]
        flip = torch.rand(n, generator=g) < 0.5
        out[flip] = out[flip].flip(-1)
        return out

    def batches(self, batch: int, seed: int, start_step: int = 0, train_size: int | None = None):
        """Endless shuffled epochs of augmented training batches; step k's batch depends on (seed, k)."""
        n = len(self.train_y) if train_size is None else train_size
        per_epoch = n // batch
        step = start_step
        while True:
            epoch, k = divmod(step, per_epoch)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            idx = perm[k * batch : (k + 1) * batch]
            g = torch.Generator().manual_seed(seed * 10_000_000 + step)
            yield step, self.augment(self.train_x[idx], g), self.train_y[idx]
            step += 1

    def recal_batches(self, images: int = 1024, batch: int = 128):
        g = torch.Generator().manual_seed(12345)
        x = self.augment(self.recal_x[:images], g)
        return [(x[i : i + batch], self.recal_y[i : i + batch]) for i in range(0, images, batch)]

    def search_batches(self, images: int = 2000, batch: int = 500):
        return [(self.search_x[i : i + batch], self.search_y[i : i + batch]) for i in range(0, images, batch)]

    def test_batches(self, batch: int = 500):
        return [(self.test_x[i : i + batch], self.test_y[i : i + batch]) for i in range(0, len(self.test_y), batch)]


# ---- initialisation variants ----


def apply_init(model: nn.Module, mode: str) -> None:
    """'project': spaces.ops.init_weights as is (He fan-out with depthwise fan-out not divided by groups).
    'goog': depthwise convs get fan-out / groups (timm/EfficientNet); 'goog0': plus zero-init of the last
    BN of every residual MBConv (block starts as identity)."""
    init_weights(model)
    if mode == "project":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
    if mode == "goog0":
        for m in model.modules():
            if isinstance(m, MBConv) and m.residual:
                nn.init.zeros_(m.project[1].weight)


def append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_avg() -> float:
    return os.getloadavg()[0]


# ---- 1. step cost ----


def cmd_cost(args) -> None:
    out = Path(args.out)
    done = {(r["layout"], r["batch"], r.get("channels_last", False)) for r in read(out)}
    cl = torch.channels_last if args.cl else torch.contiguous_format
    data = Data()
    for layout in args.layouts.split(","):
        if (layout, args.batch, args.cl) in done:
            continue
        space = make_space(layout)
        table = FlopsTable(space, 28, 10, 1)
        low, high = table.bounds()
        torch.manual_seed(0)
        net = SuperNet(space, 10, 1).to(memory_format=cl)
        opt = torch.optim.SGD(param_groups(list(net.parameters()), 4e-5), lr=0.1, momentum=0.9)
        crit = nn.CrossEntropyLoss(label_smoothing=0.1)
        rng = np.random.default_rng(0)
        times, data_times = [], []
        it = data.batches(args.batch, seed=0)
        for _ in range(args.steps):
            t0 = time.perf_counter()
            _, x, y = next(it)
            x = x.contiguous(memory_format=cl)
            t1 = time.perf_counter()
            arch = sample_uniform(space, rng)
            opt.zero_grad(set_to_none=True)
            loss = crit(net(x, arch), y)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            data_times.append(t1 - t0)
        # stand-alone step of a median-ish path (for the ground truth cost)
        sa = build_network(space, sample_uniform(space, np.random.default_rng(1)), 10, 1).to(memory_format=cl)
        opt2 = torch.optim.SGD(sa.parameters(), lr=0.1, momentum=0.9)
        sa_times = []
        for _ in range(args.steps // 2):
            t0 = time.perf_counter()
            _, x, y = next(it)
            x = x.contiguous(memory_format=cl)
            opt2.zero_grad()
            crit(sa(x), y).backward()
            opt2.step()
            sa_times.append(time.perf_counter() - t0)
        rec = {
            "layout": layout,
            "batch": args.batch,
            "layers": len(space.layers),
            "shape_changing": shape_changing(space),
            "identity_layers": sum(1 for layer in space.layers if len(layer.choices) == 10),
            "flops_low_M": low / 1e6,
            "flops_high_M": high / 1e6,
            "budget_M": (low + 0.5 * (high - low)) / 1e6,
            "step_s_median": float(np.median(times[5:])),
            "step_s_mean": float(np.mean(times[5:])),
            "data_s_mean": float(np.mean(data_times[5:])),
            "standalone_step_s_median": float(np.median(sa_times[3:])),
            "steps": args.steps,
            "channels_last": args.cl,
            "load1": load_avg(),
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(rec), flush=True)
        append(out, rec)


# ---- 2. supernet path accuracy vs steps ----


def eval_paths(net, paths, recal, search) -> list[float]:
    return [score_path(net, arch, recal, search) for arch in paths]


def cmd_supernet(args) -> None:
    out = RESULTS / "supernet.jsonl"
    tag = args.tag
    evals = sorted(int(s) for s in args.evals.split(","))
    done = {r["step"] for r in read(out) if r["tag"] == tag}
    if all(e in done for e in evals):
        print(f"{tag}: all evals done")
        return
    space = make_space(args.layout)
    data = Data()
    recal, search = data.recal_batches(args.recal_images), data.search_batches(args.eval_images)
    paths = [sample_uniform(space, np.random.default_rng([777, i])) for i in range(args.paths)]
    torch.manual_seed(args.seed)
    net = SuperNet(space, 10, 1)
    apply_init(net, args.init)
    cl = torch.channels_last if args.cl else torch.contiguous_format
    net = net.to(memory_format=cl)
    opt = torch.optim.SGD(
        param_groups(list(net.parameters()), args.wd), lr=args.lr, momentum=0.9, nesterov=args.nesterov
    )
    total = args.steps

    def lr_at(step: int) -> float:
        warm = args.warmup
        if warm and step < warm:
            return args.lr * (step + 1) / warm
        if args.sched == "const":
            return args.lr
        if args.sched == "linear":
            return args.lr * max(0.0, 1.0 - step / total)
        if args.sched == "cos":
            return 0.5 * args.lr * (1 + math.cos(math.pi * min(step, total) / total))
        raise ValueError(args.sched)

    ckpt = RESULTS / "ckpt" / f"{tag}.pt"
    start, wall = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, wall = state["step"], state["wall"]
        print(f"resumed {tag} at step {start}", flush=True)
    crit = nn.CrossEntropyLoss(label_smoothing=args.ls)
    net.train()
    t0 = time.time()
    loss_sum, correct, count = 0.0, 0, 0
    it = data.batches(args.batch, seed=args.seed, start_step=start, train_size=args.train_size)
    for step, x, y in it:
        if step >= total:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        arch = sample_uniform(space, np.random.default_rng([args.seed, 1, step]))
        x = x.contiguous(memory_format=cl)
        opt.zero_grad(set_to_none=True)
        logits = net(x, arch)
        loss = crit(logits, y)
        loss.backward()
        if args.clip:
            nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], args.clip)
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
        if step + 1 in evals and step + 1 not in done:
            train_wall = wall + time.time() - t0
            te = time.time()
            accs = eval_paths(net, paths, recal, search)
            eval_s = time.time() - te
            rec = {
                "tag": tag,
                "layout": args.layout,
                "step": step + 1,
                "batch": args.batch,
                "lr": args.lr,
                "sched": args.sched,
                "total_steps": total,
                "warmup": args.warmup,
                "init": args.init,
                "wd": args.wd,
                "ls": args.ls,
                "train_size": args.train_size,
                "channels_last": args.cl,
                "mean_path_acc": float(np.mean(accs)),
                "min_path_acc": float(np.min(accs)),
                "max_path_acc": float(np.max(accs)),
                "path_accs": accs,
                "train_loss": loss_sum / max(count, 1),
                "train_acc": 100.0 * correct / max(count, 1),
                "train_wall_s": train_wall,
                "s_per_step": train_wall / (step + 1),
                "eval_s": eval_s,
                "load1": load_avg(),
            }
            print(json.dumps({k: v for k, v in rec.items() if k != "path_accs"}), flush=True)
            append(out, rec)
            loss_sum, correct, count = 0.0, 0, 0
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            wall = train_wall
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step + 1, "wall": wall}, ckpt)
            t0 = time.time()
            net.train()
        if args.log_every and (step + 1) % args.log_every == 0:
            print(f"step {step + 1} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)


# ---- 3. stand-alone ground truth ----


def band_archs(space: SpaceSpec, table: FlopsTable, band: tuple[float, float], n: int, seed: int):
    """n architectures drawn uniformly within the band (fractions of the FLOPs range), rejection sampling."""
    low, high = table.bounds()
    lo, hi = low + band[0] * (high - low), low + band[1] * (high - low)
    rng = np.random.default_rng([4242, seed])
    archs = []
    while len(archs) < n:
        a = sample_uniform(space, rng)
        if lo <= table.flops(a) <= hi and a not in archs:
            archs.append(a)
    return archs, lo, hi


def train_standalone(space, arch, data: Data, args, seed: int) -> dict:
    torch.manual_seed(1000 + seed)
    net = build_network(space, arch, 10, 1)
    apply_init(net, args.init)
    cl = torch.channels_last if args.cl else torch.contiguous_format
    net = net.to(memory_format=cl)
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = args.dropout
    opt = torch.optim.SGD(param_groups(list(net.parameters()), args.wd), lr=args.lr, momentum=0.9, nesterov=True)
    n = len(data.train_y) if args.train_size is None else args.train_size
    per_epoch = n // args.batch
    total = int(args.epochs * per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=total, pct_start=args.pct_start, anneal_strategy="cos"
    )
    ema = None
    if args.ema:
        from timm.utils import ModelEmaV2

        ema = ModelEmaV2(net, decay=args.ema)
    crit = nn.CrossEntropyLoss(label_smoothing=args.ls)
    net.train()
    t0 = time.time()
    for step, x, y in data.batches(args.batch, seed=100 + seed, train_size=args.train_size):
        if step >= total:
            break
        opt.zero_grad(set_to_none=True)
        crit(net(x.contiguous(memory_format=cl)), y).backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(net)
    train_s = time.time() - t0
    final = ema.module if ema is not None else net
    final.eval()
    test = evaluate(final, data.test_batches())
    search = evaluate(final, data.search_batches(len(data.search_y)))
    return {"top1": test["top1"], "search_top1": search["top1"], "train_s": train_s, "steps": total}


def cmd_gt(args) -> None:
    out = RESULTS / "gt.jsonl"
    space = make_space(args.layout)
    table = FlopsTable(space, 28, 10, 1)
    band = tuple(float(s) for s in args.band.split(","))
    archs, lo, hi = band_archs(space, table, band, args.n, args.arch_seed)
    if args.extra:
        archs += [tuple(int(c) for c in a.split("-")) for a in args.extra.split(",")]
    done = {(r["arch"], r["seed"]) for r in read(out) if r["tag"] == args.tag}
    data = Data()
    seeds = [int(s) for s in args.seeds.split(",")]
    order = [(a, s) for s in seeds for a in archs]  # all archs for seed 0 first, then seed 1
    for arch, seed in order:
        if (encode(arch), seed) in done:
            continue
        res = train_standalone(space, arch, data, args, seed)
        rec = {
            "tag": args.tag,
            "layout": args.layout,
            "arch": encode(arch),
            "seed": seed,
            "flops_M": table.flops(arch) / 1e6,
            "params": table.params(arch),
            "band_M": [lo / 1e6, hi / 1e6],
            "identities": sum(1 for layer, c in zip(space.layers, arch) if layer.choices[c]["op"] == "identity"),
            "epochs": args.epochs,
            "lr": args.lr,
            "batch": args.batch,
            "wd": args.wd,
            "ls": args.ls,
            "ema": args.ema,
            "init": args.init,
            "train_size": args.train_size,
            **res,
            "load1": load_avg(),
        }
        print(json.dumps(rec), flush=True)
        append(out, rec)


# ---- 4. pilot tau ----


def cmd_tau(args) -> None:
    from scipy.stats import kendalltau

    space = make_space(args.layout)
    table = FlopsTable(space, 28, 10, 1)
    gt = [r for r in read(RESULTS / "gt.jsonl") if r["tag"] == args.gt_tag]
    by_arch: dict[str, list[float]] = {}
    for r in gt:
        by_arch.setdefault(r["arch"], []).append(r["top1"])
    archs = sorted(by_arch)
    data = Data()
    recal, search = data.recal_batches(args.recal_images), data.search_batches(args.eval_images)
    net = SuperNet(space, 10, 1)
    net.load_state_dict(torch.load(args.ckpt, weights_only=False)["model"])
    scores = [score_path(net, tuple(int(c) for c in a.split("-")), recal, search) for a in archs]
    truth = [float(np.mean(by_arch[a])) for a in archs]
    flops = [table.flops(tuple(int(c) for c in a.split("-"))) for a in archs]
    tau = kendalltau(scores, truth).statistic
    tau_f = kendalltau(flops, truth).statistic
    rec = {
        "ckpt": args.ckpt,
        "gt_tag": args.gt_tag,
        "n": len(archs),
        "tau_supernet": tau,
        "tau_flops": tau_f,
        "archs": archs,
        "scores": scores,
        "truth": truth,
        "flops": flops,
    }
    print(json.dumps(rec), flush=True)
    append(RESULTS / "tau.jsonl", rec)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--layouts", default=",".join(LAYOUTS))
    c.add_argument("--batch", type=int, default=128)
    c.add_argument("--steps", type=int, default=40)
    c.add_argument("--cl", action="store_true")
    c.add_argument("--out", default=str(RESULTS / "cost.jsonl"))
    s = sub.add_parser("supernet")
    s.add_argument("--layout", required=True)
    s.add_argument("--tag", required=True)
    s.add_argument("--steps", type=int, default=2000)
    s.add_argument("--evals", default="500,1000,2000")
    s.add_argument("--batch", type=int, default=128)
    s.add_argument("--lr", type=float, default=0.1)
    s.add_argument("--sched", default="linear")
    s.add_argument("--warmup", type=int, default=0)
    s.add_argument("--wd", type=float, default=4e-5)
    s.add_argument("--ls", type=float, default=0.1)
    s.add_argument("--nesterov", action="store_true")
    s.add_argument("--clip", type=float, default=0.0)
    s.add_argument("--init", default="project")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--paths", type=int, default=8)
    s.add_argument("--recal-images", type=int, default=1024)
    s.add_argument("--eval-images", type=int, default=2000)
    s.add_argument("--train-size", type=int, default=None)
    s.add_argument("--log-every", type=int, default=0)
    s.add_argument("--cl", type=int, default=1)
    g = sub.add_parser("gt")
    g.add_argument("--layout", required=True)
    g.add_argument("--tag", required=True)
    g.add_argument("--band", default="0.3,0.5")
    g.add_argument("--n", type=int, default=6)
    g.add_argument("--arch-seed", type=int, default=0)
    g.add_argument("--extra", default="")
    g.add_argument("--seeds", default="0,1")
    g.add_argument("--epochs", type=float, default=3)
    g.add_argument("--batch", type=int, default=128)
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--pct-start", type=float, default=0.25)
    g.add_argument("--wd", type=float, default=5e-5)
    g.add_argument("--ls", type=float, default=0.1)
    g.add_argument("--ema", type=float, default=0.0)
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--init", default="project")
    g.add_argument("--train-size", type=int, default=None)
    g.add_argument("--cl", type=int, default=1)
    t = sub.add_parser("tau")
    t.add_argument("--layout", required=True)
    t.add_argument("--ckpt", required=True)
    t.add_argument("--gt-tag", required=True)
    t.add_argument("--recal-images", type=int, default=1024)
    t.add_argument("--eval-images", type=int, default=2000)
    args = p.parse_args()
    {"cost": cmd_cost, "supernet": cmd_supernet, "gt": cmd_gt, "tau": cmd_tau}[args.cmd](args)


if __name__ == "__main__":
    main()
