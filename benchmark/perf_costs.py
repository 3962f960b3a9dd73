"""What a method's supernet epoch costs on the proxy, measured in isolation: the cost claim and the probes' share.

    python -m benchmark.perf cost_ratio probe_share

`cost_ratio` decides the paper's "same GPU-days as SPOS" on one machine, with every method's supernet loop
stepping in alternation on the same batches, round after round, until each ratio's 95 % interval is within
±5 % (the reference runs' times were co-scheduled two at a time on different hosts, so they cannot decide it).
A method's epoch is its training steps plus its per-epoch work (EnNAS's ζ estimate and sampler build, part of
the method) plus Cream's meta steps; the probes are instrumentation for the figures and are timed apart by
`probe_share`, which gives their share of a KD method's supernet stage under the settings before and after
they were made cheaper, with the teacher-accuracy standard error each gives (`predicted_teacher_se`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time

import numpy as np
import torch
from scipy import stats

# The proxy preset's probes before they were made cheaper (issue "Answers, not intervals", item 7).
PROBES_BEFORE = {"probe_images": 3000, "probe_fit_images": 500, "probe_sets": 12, "probe_every": 1}
# Teacher-accuracy standard error to keep: EnNAS seed 0's first epoch in the committed reference runs
# (results/proxy/ennas-s1-seed0, probes PROBES_BEFORE), with its crossed components and accuracy.
REFERENCE_SE = {"teacher_acc": 67.83, "se": 0.890, "image_se": 0.873, "sets": 12, "images": 2500}


def predicted_teacher_se(sets: int, images: int, ref: dict = REFERENCE_SE) -> float:
    """Teacher-accuracy s.e. (points) of `sets` probe sets scored on `images` images, from the reference epoch.

    The probe's s.e. is crossed (ennas.core.probe.crossed_se): se² = v_set / S + v_img(S) / N, where v_img(S),
    the variance of an image's mean correctness over S sets, is b + w / S (b: between-image difficulty, w: the
    set x image interaction). Each (set, image) cell is Bernoulli, so b + v_set + w = p(1 − p); the reference
    epoch's logged components then give v_set, b and w, and the formula gives any (S, N).
    """
    p, s0, n0 = ref["teacher_acc"] / 100, ref["sets"], ref["images"]
    v_set = (ref["se"] ** 2 - ref["image_se"] ** 2) * s0
    v_img = ref["image_se"] ** 2 * n0  # = b + w / s0, in points²
    w = max(p * (1 - p) * 1e4 - v_set - v_img, 0.0) * s0 / (s0 - 1)
    b = v_img - w / s0
    return math.sqrt(v_set / sets + (b + w / sets) / images)


def _loops(methods: tuple[str, ...], batch: int, steps: int, probes: dict | None = None) -> tuple[dict, list]:
    """Each method's supernet loop on one shared initial supernet at the proxy preset (KD on), and the batches."""
    from benchmark.perf import proxy_context
    from ennas.core.method import supernet_loop

    ctx = proxy_context("spos", batch, steps)
    loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=batch, shuffle=False)
    batches = [(ctx.data.to_device(x, "cpu"), y) for _, (x, y) in zip(range(steps + 4), loader)]
    loops = {}
    for name in methods:
        mctx = proxy_context(name, batch, steps, {"distill": probes or {}})
        from benchmark.methods import METHODS

        method = METHODS[name](mctx)
        model = copy.deepcopy(ctx.supernet)
        loops[name] = (mctx, method, supernet_loop(mctx, method, model))
    return loops, batches


def _timed(fn, *args) -> float:
    """Seconds of one call of fn(*args)."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _epoch_round(loops: dict, batches: list, order: list[str], epoch: int, meta_interval: dict) -> dict[str, float]:
    """One round: each loop's per-epoch work and steps, in `order`; the epoch seconds each implies."""
    from benchmark.perf import proxy_train_size
    from ennas.core.loop import steps_per_epoch, train_step

    train_size = proxy_train_size()
    out = {}
    for name in order:
        mctx, method, loop = loops[name]
        start_s = _timed(method.on_epoch_start, loop.model, epoch)
        step_times = []
        for step, (x, y) in enumerate(batches):
            # odd steps never trigger Cream's meta step (step % interval == 0); it is timed below
            step_times.append(_timed(train_step, mctx, loop, x, y, epoch, 2 * step + 1))
        step_s = statistics.median(step_times[2:])  # the first steps of a round warm caches
        epoch_steps = steps_per_epoch(dataclasses.replace(loop.plan, dataset=range(train_size)))
        epoch_s = step_s * epoch_steps + start_s
        if name in meta_interval:
            x, y = batches[-1]
            student = loop.policy.sample_one(np.random.default_rng(epoch))
            meta_s = _timed(loop.policy.meta_update, loop.model, x, y, student, mctx.cfg.supernet.lr)
            epoch_s += meta_s * (epoch_steps // meta_interval[name])
        out[name] = epoch_s
    return out


def log_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Geometric mean and t-interval of positive ratios, computed on the log scale, and the log values' sd."""
    logs = np.log(values)
    mean, sd = float(logs.mean()), float(logs.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, len(logs) - 1) * sd / math.sqrt(len(logs)))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), sd


def cost_ratio(
    methods: tuple[str, ...] = ("spos", "cream", "ennas-wo-ds", "ennas"),
    steps: int = 12,
    min_rounds: int = 4,
    max_rounds: int = 30,
    within: float = 0.05,
) -> dict:
    """Each method's supernet epoch over SPOS's, in isolation, repeated until every 95 % interval is within ±5 %.

    Batch, epoch size and Cream's meta interval are the proxy preset's; KD is on (after `distill.start_epoch`).
    Rounds alternate the order of the methods. The interval is a t-interval over rounds of the log ratio.
    """
    import benchmark.methods  # noqa: F401  (registers every method's config section)
    from benchmark.preset import load_preset
    from ennas.core.config import resolve

    cfg = resolve(load_preset("proxy"), method="cream", space="s1")
    batch = cfg.supernet.batch_size
    meta = {"cream": cfg.options("cream").meta_interval} if "cream" in methods else {}
    loops, batches = _loops(methods, batch, steps)
    epochs: dict[str, list[float]] = {m: [] for m in methods}
    ratios: dict[str, tuple] = {}
    for r in range(max_rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name, s in _epoch_round(loops, batches, order, epoch=1 + r, meta_interval=meta).items():
            epochs[name].append(s)
        if r + 1 < min_rounds:
            continue
        ratios = {m: log_interval([a / b for a, b in zip(epochs[m], epochs["spos"])]) for m in methods if m != "spos"}
        if all(hi / est - 1 <= within and 1 - lo / est <= within for est, lo, hi, _ in ratios.values()):
            break
    out: dict = {
        "what": f"s1/proxy supernet epochs in isolation: batch {batch}, {steps} steps a method a round, ζ included, "
        "probes excluded",
        "rounds": len(epochs["spos"]),
        "goal": f"every ratio's 95 % interval within ±{within:.0%}",
    }
    for m in methods:
        out[f"{m}_epoch_s"] = statistics.median(epochs[m])
    for m, (est, lo, hi, sd) in ratios.items():
        out[f"{m}_over_spos"] = {"ratio": est, "low": lo, "high": hi, "log_sd": sd}
    out["met"] = all(hi / est - 1 <= within and 1 - lo / est <= within for est, lo, hi, _ in ratios.values())
    return out


def probe_share(methods: tuple[str, ...] = ("ennas", "cream"), steps: int = 10, rounds: int = 3) -> dict:
    """The probes' share of a KD method's supernet stage (probes / (training + per-epoch work + probes)).

    For each method, with the probe settings before (PROBES_BEFORE) and now (the proxy preset): training steps,
    the epoch start (ζ) and the probes of one epoch, timed in alternation over `rounds`; the stage share counts
    the epochs the settings probe (distill.probe_every). The teacher s.e. is predicted from the reference epoch.
    """
    import benchmark.methods  # noqa: F401
    from benchmark.preset import load_preset
    from ennas.core.config import resolve
    from ennas.core.probe import probed_epoch

    now = resolve(load_preset("proxy"), method="ennas", space="s1")
    batch, epochs = now.supernet.batch_size, now.supernet.epochs
    settings = {"before": PROBES_BEFORE, "now": dataclasses.asdict(now.distill)}
    out: dict = {"what": f"s1/proxy, batch {batch}, {epochs} supernet epochs, {rounds} alternated rounds"}
    for name in methods:
        timings: dict[str, list[float]] = {}
        built, batches = {}, []
        for key, probes in settings.items():
            loops, batches = _loops((name,), batch, steps, probes)
            built[key] = loops[name]
        for r in range(rounds):
            for key in settings if r % 2 == 0 else reversed(settings):
                mctx, method, loop = built[key]
                epoch = mctx.cfg.supernet.epochs - 1  # the last epoch is probed under every setting
                train = _epoch_round({name: built[key]}, batches, [name], epoch, {})[name]
                probe = _timed(method.epoch_metrics, loop.model, epoch)
                timings.setdefault(f"{key}_epoch_s", []).append(train)
                timings.setdefault(f"{key}_probe_s", []).append(probe)
        for key, cfg in settings.items():
            probed = sum(probed_epoch(cfg.get("probe_every", 1), e, epochs) for e in range(epochs))
            train, probe = statistics.median(timings[f"{key}_epoch_s"]), statistics.median(timings[f"{key}_probe_s"])
            share = probe * probed / (train * epochs + probe * probed)
            scored = cfg["probe_images"] - (cfg["probe_fit_images"] or cfg["probe_images"] // 2)
            out[f"{name}_{key}"] = {
                "settings": {k: cfg.get(k) for k in ("probe_images", "probe_fit_images", "probe_sets", "probe_every")},
                "epoch_without_probes_s": train,
                "probe_s": probe,
                "probed_epochs": probed,
                "stage_share": share,
                "predicted_teacher_se": predicted_teacher_se(cfg["probe_sets"], scored),
            }
    out["goal"] = f"stage_share <= 0.15 at predicted_teacher_se <= {REFERENCE_SE['se']}"
    return out
