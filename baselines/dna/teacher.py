"""DNA's teacher: a timm EfficientNet-family network, aligned stage by stage with the supernet, trained or loaded.

The official DNA teacher is a pretrained `tf_efficientnet_b7`. Nothing is downloaded here: the teacher is
trained first on the run's own training split by the shared loop (loop "teacher", the retraining recipe),
or loaded from a local checkpoint (`dna.teacher_checkpoint`). Its stages are aligned with the
supernet's blocks by resolution: the teacher's stem stride is set to the supernet's, and a teacher stage
that downsamples where the supernet does not loses its stride (28 px proxy inputs), so block i's input and
target have the supernet's resolutions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import timm
import torch
from torch import nn

from ennas.core import distributed as dist
from ennas.core.context import RunContext
from ennas.core.evaluate import evaluate
from ennas.core.io import load_torch, save_torch
from ennas.core.loop import Loop, train_epochs
from ennas.core.retrain import plain_loop
from ennas.seeding import seed_torch
from spaces.registry import SpaceSpec

# "" picks these: EfficientNet-B0 has the stage layout the ImageNet mobile spaces copy (24/40/80/112/192 at
# strides 4/8/16/16/32); at 28 px MobileNetV2 (2.2M parameters, 10x a proxy path) costs about 4 SPOS steps
# per step on a CPU (EfficientNet-B0: about 5).
DEFAULT_TEACHERS = {"imagenet": "efficientnet_b0", "proxy": "mobilenetv2_100"}


def teacher_name(ctx: RunContext) -> str:
    """The timm model of the teacher: `dna.teacher` or the default for the run's scale."""
    return ctx.cfg.options("dna").teacher or DEFAULT_TEACHERS[ctx.cfg.scale]


def create_teacher(name: str, num_classes: int, in_chans: int, drop_rate: float = 0.0) -> nn.Module:
    """A randomly initialised timm model (never pretrained=True) with EfficientNet-style stages."""
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
    if not all(hasattr(model, a) for a in ("conv_stem", "blocks", "forward_intermediates")):
        raise ValueError(
            f"DNA's teacher must be a timm EfficientNet/MobileNet-family model (conv_stem + blocks stages), "
            f"e.g. efficientnet_b0, tf_efficientnet_b7, mobilenetv2_100; got {name!r}"
        )
    # timm's Google init draws the classifier from U(+-1/sqrt(classes)), sized for 1,000 classes; with 10 the
    # first loss is about 5 and training stumbles: start it like the supernet's classifier instead
    classifier = model.get_classifier()
    nn.init.normal_(classifier.weight, 0.0, 0.01)
    nn.init.zeros_(classifier.bias)
    return model


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


def _checkpoint_state(path: str) -> dict:
    """The weights in a local checkpoint: a raw state dict or one under 'state_dict' / 'model' / 'state_dict_ema'."""
    state = load_torch(path)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def train_teacher(ctx: RunContext, teacher: nn.Module) -> list[dict]:
    """Train the teacher on the training split with the shared loop (stage 'teacher' in train_log.jsonl)."""
    return train_epochs(ctx, teacher_loop(ctx, teacher))


def teacher_loop(ctx: RunContext, teacher: nn.Module) -> Loop:
    """The shared loop's description of the teacher's training.

    The retraining recipe (optimiser, lr, batch, label smoothing, dropout, warmup up to a third of the
    run) over `dna.teacher_epochs`, with a cosine schedule and no EMA: a teacher trained for few
    epochs ends at lr 0 instead of the recipe's slow step decay, and an EMA of so few steps would lag
    far behind the weights.
    """
    epochs = ctx.cfg.options("dna").teacher_epochs
    warmup = min(ctx.cfg.retrain.warmup_epochs, epochs // 3)  # at most a third of a short run
    cfg = dataclasses.replace(ctx.cfg.retrain, epochs=epochs, lr_decay=0.0, warmup_epochs=warmup)

    def on_epoch_end(epoch: int) -> dict:
        return {"teacher_search_acc": search_accuracy(ctx, teacher)}

    return plain_loop(ctx, "teacher", teacher, cfg, on_epoch_end=on_epoch_end)


def search_accuracy(ctx: RunContext, teacher: nn.Module) -> float:
    """The teacher's top-1 (%) on the fixed search-split batches (the test set is for final evaluation only)."""
    was_training = teacher.training
    teacher.eval()
    top1 = evaluate(teacher, ctx.search_batches, ctx.device, over_ranks=False)["top1"]  # whole on every rank
    teacher.train(was_training)
    return top1


def build_teacher(ctx: RunContext, block_sizes: Sequence[int]) -> tuple[nn.Module, list[int], list[int]]:
    """The untrained, stride-adapted teacher on the run's device, with its feature index and width per block."""
    seed_torch(ctx.cfg.seed, "teacher")
    data = ctx.data
    teacher = create_teacher(teacher_name(ctx), data.num_classes, data.in_chans, ctx.cfg.retrain.dropout)
    stem_stride = ctx.space.stem["stride"]
    indices, widths = adapt_teacher(teacher, stem_stride, block_sizes, data.in_chans, data.resolution)
    teacher = teacher.to(ctx.device)
    if ctx.cfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher, indices, widths


def prepare_teacher(ctx: RunContext, teacher: nn.Module) -> dict:
    """Load the teacher from teacher.pt, else from the configured checkpoint, else train it; then freeze it.

    Returns {"teacher", "teacher_search_acc", "teacher_source"}; writes teacher.pt (rank 0) the first time.
    """
    done = ctx.file("teacher.pt")
    name = teacher_name(ctx)
    if done.exists():
        state = load_torch(done, ctx.device)
        teacher.load_state_dict(state["state_dict"])
        info = {k: state[k] for k in ("teacher", "teacher_search_acc", "teacher_source")}
    else:
        path = ctx.cfg.options("dna").teacher_checkpoint
        if path:
            try:
                teacher.load_state_dict(_checkpoint_state(path))
            except RuntimeError as err:
                raise ValueError(f"dna.teacher_checkpoint {path} does not fit timm model {name!r}: {err}") from err
            source = path
        else:
            train_teacher(ctx, teacher)
            source = "trained"
        info = {"teacher": name, "teacher_search_acc": search_accuracy(ctx, teacher), "teacher_source": source}
        if dist.is_main():
            save_torch(done, {**info, "state_dict": teacher.state_dict()})
        dist.barrier()
    # Frozen in eval mode (the official code keeps it in train mode under no_grad): the features a block
    # learns and is rated on then do not depend on the batch they come in.
    teacher.eval().requires_grad_(False)
    return info
