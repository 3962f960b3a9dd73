"""DNA's teacher: a timm EfficientNet-family network, aligned stage by stage with the supernet, trained or loaded.

The official DNA teacher is a pretrained `tf_efficientnet_b7`. Nothing is downloaded here: the teacher is a
local checkpoint of a timm model, the teacher trained once by `python -m benchmark.teacher`, or trained inside
the run by the shared loop (loop "teacher", the retraining recipe); `baselines.dna.source` decides which. Its
stages are aligned with the supernet's blocks by resolution: the teacher's stem stride is set to the
supernet's, and a teacher stage that downsamples where the supernet does not loses its stride (28 px proxy
inputs), so block i's input and target have the supernet's resolutions.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from baselines.dna.source import (
    TeacherSource,
    check_fingerprint,
    fingerprint,
    fingerprint_hash,
    holdout_note,
    loaded_line,
    shown,
    training_note,
)
from ennas.core import distributed as dist
from ennas.core.config import ConfigError
from ennas.core.context import RunContext
from ennas.core.evaluate import evaluate
from ennas.core.io import save_torch
from ennas.core.loop import Loop, train_epochs
from ennas.core.retrain import plain_loop
from ennas.seeding import seed_torch
from spaces.registry import SpaceSpec


def create_teacher(
    name: str, num_classes: int, in_chans: int, drop_rate: float = 0.0, checkpoint: Path | None = None
) -> nn.Module:
    """A timm model (never pretrained=True) with EfficientNet-style stages: random, or a local checkpoint's weights.

    timm's loader takes the checkpoint's `state_dict_ema`, `state_dict` or `model` entry (or a bare state dict)
    and refuses any missing, unexpected or misshapen weight, which becomes one line naming the file and model.
    """
    if not timm.is_model(name):
        raise ConfigError(f"dna.teacher {name!r} is not a timm model (e.g. efficientnet_b0, tf_efficientnet_b7)")
    path = None if checkpoint is None else str(checkpoint)
    try:
        model = timm.create_model(
            name,
            pretrained=False,
            checkpoint_path=path,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
        )
    except (RuntimeError, OSError, KeyError, ValueError, AssertionError) as err:
        if checkpoint is None:
            raise
        raise ConfigError(
            f"dna.teacher_checkpoint {checkpoint} does not fit timm model {name!r}: {short_reason(err)}"
        ) from None
    if not all(hasattr(model, a) for a in ("conv_stem", "blocks", "forward_intermediates")):
        raise ConfigError(
            f"DNA's teacher must be a timm EfficientNet/MobileNet-family model (conv_stem + blocks stages), "
            f"e.g. efficientnet_b0, tf_efficientnet_b7, mobilenetv2_100; got {name!r}"
        )
    if checkpoint is None:
        # timm's Google init draws the classifier from U(+-1/sqrt(classes)), sized for 1,000 classes; with 10 the
        # first loss is about 5 and training stumbles: start it like the supernet's classifier instead
        classifier = model.get_classifier()
        nn.init.normal_(classifier.weight, 0.0, 0.01)
        nn.init.zeros_(classifier.bias)
    return model


def short_reason(err: BaseException) -> str:
    """Why a state dict did not load, in a few words: missing / unexpected weights (another model), else the first
    size mismatch (the same model with another class count or input)."""
    lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err).strip() or repr(err)]
    parts = []
    for line in lines:
        kind, _, keys = line.partition(" key(s) in state_dict: ")
        names = [k.strip(' "') for k in keys.split(",") if k.strip()]
        if names:
            parts.append(f"{len(names)} {kind.lower()} weights (e.g. {names[0]})")
    sizes = [line for line in lines if line.startswith("size mismatch for ")]
    if sizes and not parts:
        key = sizes[0].removeprefix("size mismatch for ").split(":")[0]
        shapes = [part.split(")")[0] for part in sizes[0].split("torch.Size(")[1:]]
        more = f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""
        parts.append(f"{key} is {shapes[0]} in the checkpoint, {shapes[-1]} in the model{more}")
    return "; ".join(parts) or lines[0][:200]


def block_ranges(space: SpaceSpec) -> list[tuple[int, int]]:
    """The supernet's blocks: searchable layers grouped by stage (a stage starts where stride or width changes)."""
    starts = [i for i, layer in enumerate(space.layers) if i == 0 or layer.stride != 1 or layer.in_chs != layer.out_chs]
    return list(zip(starts, starts[1:] + [len(space.layers)]))


def block_sizes(space: SpaceSpec, resolution: int) -> list[int]:
    """Feature-map size after every block ('same' padding: each stride divides the size, rounding up)."""
    size = math.ceil(resolution / space.stem["stride"])
    sizes = []
    for start, stop in block_ranges(space):
        for layer in space.layers[start:stop]:
            size = math.ceil(size / layer.stride)
        sizes.append(size)
    return sizes


def adapter(in_chs: int, out_chs: int, norm: bool) -> nn.Module:
    """A 1x1 convolution between widths that differ (with BN when it feeds a supernet layer), else Identity."""
    if in_chs == out_chs:
        return nn.Identity()
    if norm:
        return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs))
    return nn.Conv2d(in_chs, out_chs, 1)


def align_stages(teacher_strides: Sequence[int], block_strides: Sequence[int]) -> tuple[list[int], list[int]]:
    """Teacher stage for each supernet block (in order), and the teacher stages whose stride 2 must become 1.

    Walking both in order: equal strides match; a teacher stage that downsamples where the block does not
    is matched with its stride removed; a teacher stage that keeps the resolution where the block
    downsamples is skipped (its output is not used).
    """
    picks, flatten, j = [], [], 0
    for s in block_strides:
        while j < len(teacher_strides) and teacher_strides[j] < s:
            j += 1
        if j == len(teacher_strides):
            raise ValueError(
                f"teacher stages (strides {list(teacher_strides)}) cannot be aligned with the supernet's blocks "
                f"(strides {list(block_strides)}); pick a deeper teacher (dna.teacher)"
            )
        if teacher_strides[j] > s:
            flatten.append(j)
        picks.append(j)
        j += 1
    return picks, flatten


def _strides(resolutions: Sequence[int]) -> list[int]:
    """Stride between consecutive feature maps (1 or 2, from their sizes)."""
    return [1 if b == a else 2 for a, b in zip(resolutions, resolutions[1:])]


def _remove_stride(module: nn.Module) -> None:
    """Make every stride-2 convolution of `module` stride 1 ('same' padding keeps the size)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (1, 1)


@torch.no_grad()
def _feature_sizes(teacher: nn.Module, in_chans: int, resolution: int) -> list[tuple[int, int]]:
    """(channels, size) of the stem and of every stage output, from one dummy forward in eval mode."""
    was_training = teacher.training
    teacher.eval()
    x = torch.zeros(1, in_chans, resolution, resolution, device=next(teacher.parameters()).device)
    feats = teacher.forward_intermediates(x, extra_blocks=True, intermediates_only=True)
    teacher.train(was_training)
    return [(f.shape[1], f.shape[-1]) for f in feats]


def adapt_teacher(
    teacher: nn.Module, stem_stride: int, block_sizes: Sequence[int], in_chans: int, resolution: int
) -> tuple[list[int], list[int]]:
    """Adapt the teacher's strides in place to the supernet's; returns (forward_intermediates index, width) per block.

    Index 0 is the teacher's stem, index j + 1 the output of its stage j (timm's `extra_blocks` indexing).
    """
    if teacher.conv_stem.stride[0] != stem_stride:
        teacher.conv_stem.stride = (stem_stride, stem_stride)
    sizes = _feature_sizes(teacher, in_chans, resolution)
    stem_size = resolution // stem_stride if resolution % stem_stride == 0 else resolution // stem_stride + 1
    if sizes[0][1] != stem_size:
        raise ValueError(f"teacher stem gives {sizes[0][1]} px, the supernet's stem {stem_size} px")
    picks, flatten = align_stages(_strides([s for _, s in sizes]), _strides([stem_size, *block_sizes]))
    for j in flatten:
        _remove_stride(teacher.blocks[j])
    sizes = _feature_sizes(teacher, in_chans, resolution)
    got = [sizes[j + 1][1] for j in picks]
    if got != list(block_sizes):
        raise ValueError(f"teacher stages give sizes {got} where the supernet's blocks give {list(block_sizes)}")
    return [j + 1 for j in picks], [sizes[j + 1][0] for j in picks]


@torch.no_grad()
def teacher_features(teacher: nn.Module, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
    """The teacher's feature maps at `indices` (stopping after the last one needed)."""
    return teacher.forward_intermediates(
        x, indices=list(indices), stop_early=True, intermediates_only=True, extra_blocks=True
    )


def block_pairs(
    teacher: nn.Module, x: torch.Tensor, indices: tuple[int | None, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(block input, target) for images x: the teacher's stage i-1 and stage i features (block 0: the image)."""
    first, last = indices
    feats = teacher_features(teacher, x, [last] if first is None else [first, last])
    return (x if first is None else feats[0]), feats[-1]


def train_teacher(ctx: RunContext, teacher: nn.Module) -> list[dict]:
    """Train the teacher on the training split with the shared loop (stage 'teacher' in train_log.jsonl)."""
    return train_epochs(ctx, teacher_loop(ctx, teacher))


def teacher_loop(ctx: RunContext, teacher: nn.Module) -> Loop:
    """The shared loop's description of the teacher's training.

    The retraining recipe (optimiser, lr, batch, label smoothing, dropout, warmup up to a third of the
    run) over `dna.teacher_epochs`, with a cosine schedule and no EMA: a teacher trained for few
    epochs ends at lr 0 instead of the recipe's slow step decay, and an EMA of so few steps would lag
    far behind the weights. `dna.teacher_erasing` adds random erasing, against overfitting in a long run.
    """
    opts = ctx.cfg.options("dna")
    epochs = opts.teacher_epochs
    warmup = min(ctx.cfg.retrain.warmup_epochs, epochs // 3)  # at most a third of a short run
    cfg = dataclasses.replace(ctx.cfg.retrain, epochs=epochs, lr_decay=0.0, warmup_epochs=warmup)

    def on_epoch_end(epoch: int) -> dict:
        return {"teacher_search_acc": search_accuracy(ctx, teacher)}

    return plain_loop(ctx, "teacher", teacher, cfg, on_epoch_end=on_epoch_end, erasing=opts.teacher_erasing)


def search_accuracy(ctx: RunContext, teacher: nn.Module) -> float:
    """The teacher's top-1 (%) on the fixed search-split batches (the test set is for final evaluation only)."""
    was_training = teacher.training
    teacher.eval()
    top1 = evaluate(teacher, ctx.search_batches, ctx.device, over_ranks=False)["top1"]  # whole on every rank
    teacher.train(was_training)
    return top1


def stage_layout(
    ctx: RunContext, teacher: nn.Module, indices: list[int], widths: list[int], sizes: Sequence[int]
) -> dict:
    """The stride-adapted teacher's stages as DNA's blocks are cut against them (the fingerprint's layout part)."""
    features = _feature_sizes(teacher, ctx.data.in_chans, ctx.data.resolution)
    return {
        "stem_stride": ctx.space.stem["stride"],
        "stages": list(indices),
        "widths": list(widths),
        "block_sizes": list(sizes),
        "feature_sizes": [list(f) for f in features],
    }


def build_teacher(
    ctx: RunContext, block_sizes: Sequence[int], source: TeacherSource
) -> tuple[nn.Module, list[int], list[int], dict]:
    """The stride-adapted teacher on the run's device with the source's weights (random for "train"), its
    feature index and width per block, and its fingerprint. A saved teacher made for another dataset, class
    count, model or stage layout is refused in one line before its weights load."""
    seed_torch(ctx.cfg.seed, "teacher")
    data = ctx.data
    check_fingerprint(source, fingerprint(ctx, source.model))
    checkpoint = source.path if source.kind == "checkpoint" else None
    teacher = create_teacher(source.model, data.num_classes, data.in_chans, ctx.cfg.retrain.dropout, checkpoint)
    stem_stride = ctx.space.stem["stride"]
    indices, widths = adapt_teacher(teacher, stem_stride, block_sizes, data.in_chans, data.resolution)
    fp = fingerprint(ctx, source.model, stage_layout(ctx, teacher, indices, widths, block_sizes))
    check_fingerprint(source, fp)
    if "state_dict" in source.saved:  # our own files (run, committed): same model and layout, checked above
        teacher.load_state_dict(source.saved.pop("state_dict"))  # the weights live in the model from here on
    teacher = teacher.to(ctx.device)
    if ctx.cfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher, indices, widths, fp


INFO_KEYS = ("teacher", "teacher_kind", "teacher_source", "teacher_fingerprint", "teacher_search_acc")
ONCE_KEYS = ("teacher_test_top1", "teacher_train_device_s")


def prepare_teacher(ctx: RunContext, teacher: nn.Module, source: TeacherSource, fp: dict) -> dict:
    """Train the teacher if the source says so, then freeze it; returns its record for final.json.

    The record: the model, where it came from (kind, file), its fingerprint hash, search-split top-1, and for a
    teacher trained once its test top-1 and training device seconds (the one-time cost reported beside DNA's;
    None where unknown). Writes teacher.pt (rank 0) the first time, so a resumed run keeps its teacher.
    """
    if source.kind == "run":
        saved = source.saved
        kind = saved.get("teacher_kind") or ("train" if saved.get("teacher_source") == "trained" else "checkpoint")
        info = {k: saved.get(k) for k in INFO_KEYS + ONCE_KEYS} | {"teacher_kind": kind}
    else:
        if source.kind == "train":
            if dist.is_main():
                print(training_note(ctx, source), file=sys.stderr, flush=True)
            records = train_teacher(ctx, teacher)
            once = {"teacher_source": "trained", "teacher_test_top1": None}
            once["teacher_train_device_s"] = sum(r["device_s"] for r in records)
        else:
            once = {k: source.saved.get(k.removeprefix("teacher_")) for k in ONCE_KEYS}
            once["teacher_source"] = shown(source.path) if source.kind == "committed" else str(source.path)
        info = {"teacher": source.model, "teacher_kind": source.kind, "teacher_fingerprint": fingerprint_hash(fp)}
        info |= once | {"teacher_search_acc": search_accuracy(ctx, teacher)}
        if dist.is_main():
            if source.kind != "train":
                print(loaded_line(info), flush=True)
            note = holdout_note(ctx, source.saved) if source.kind == "committed" else None
            if note:
                print(note, file=sys.stderr, flush=True)
            save_torch(ctx.file("teacher.pt"), {**info, "fingerprint": fp, "state_dict": teacher.state_dict()})
        dist.barrier()
    # Frozen in eval mode (the official code keeps it in train mode under no_grad): the features a block
    # learns and is rated on then do not depend on the batch they come in.
    teacher.eval().requires_grad_(False)
    return info
