"""The data path: uint8 transforms normalised on the device, one loader per loop, fixed batches drawn once.

The reference is the float transform every dataset used before (copied here as `OldTensorTransform`): with
num_workers = 0 the network must see bit for bit the tensors it saw then.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import preset_config
from test_data import needs_fmnist

from ennas.core.config import ConfigError
from ennas.core.context import RunContext
from ennas.core.loop import EpochPlan, epoch_loader
from ennas.data import EpochLoader, FixedBatches, View, build_data, make_loader
from ennas.data.fixed import draw
from ennas.seeding import seed_torch, stream_seed

pytestmark = pytest.mark.usefixtures("one_thread")


class OldTensorTransform:
    """The per-item float transform of the suite before uint8 shipping (reference only)."""

    def __init__(self, mean, std, *, pad=0, flip=False):
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self.pad, self.flip = pad, flip

    def __call__(self, image):
        x = image.float().div_(255)
        if self.pad:
            h, w = x.shape[-2:]
            i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = F.pad(x, (self.pad,) * 4)[:, i : i + h, j : j + w]
        if self.flip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return (x - self.mean) / self.std


def old_view(data, view: View, **aug) -> View:
    """`view` with the old float transform, for the data bundle's mean/std."""
    return View(view.base, view.indices, OldTensorTransform(data.normalize.mean, data.normalize.std, **aug))


def smoke_ctx(tmp_path: Path, **data) -> RunContext:
    cfg = preset_config("smoke", {"data": data} if data else {}, method="spos", space="s1")
    return RunContext(cfg, tmp_path, torch.device("cpu"))


def assert_same_batches(new, old) -> None:
    new, old = list(new), list(old)
    assert len(new) == len(old) > 0
    for (x, y), (x_old, y_old) in zip(new, old, strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, x_old) and torch.equal(y, y_old)


@needs_fmnist
@pytest.mark.parametrize("augment", [{"pad": 2, "flip": True}, {}], ids=["train", "eval"])
def test_fashion_mnist_uint8_then_device_normalise_is_bitwise_the_old_float_transform(augment):
    data = build_data("fashion-mnist", seed=0)
    view = data.train if augment else data.test
    old = old_view(data, view, **augment)
    torch.manual_seed(3)
    expected = torch.stack([old[i][0] for i in range(256)])
    torch.manual_seed(3)
    shipped = torch.stack([view[i][0] for i in range(256)])
    assert shipped.dtype == torch.uint8
    assert torch.equal(data.to_device(shipped, "cpu"), expected)


def test_synthetic_rgb_uint8_path_is_bitwise_the_old_one():
    data = build_data("synthetic", n_train=96, n_test=16, in_chans=3, resolution=16, search_size=8)
    old = old_view(data, data.train, pad=1)
    torch.manual_seed(0)
    expected = torch.stack([old[i][0] for i in range(64)])
    torch.manual_seed(0)
    assert torch.equal(data.to_device(torch.stack([data.train[i][0] for i in range(64)]), "cpu"), expected)
    assert data.normalize(expected) is expected  # float images are taken as normalised


@needs_fmnist
def test_one_epoch_loader_per_loop_gives_the_old_per_epoch_batches(tmp_path):
    """The reused loader yields what a DataLoader built per epoch (the old code) yielded, skip included."""
    ctx = smoke_ctx(tmp_path)
    plan = EpochPlan(ctx.data.train, 64, 3, stream="supernet")
    old = old_view(ctx.data, ctx.data.train, pad=2, flip=True)
    seed = stream_seed(ctx.cfg.seed, "supernet")
    schedule = [(0, 0, 4), (1, 2, 5), (2, 0, 3)]  # (epoch, skipped steps, steps): epoch 1 resumes mid-way
    torch.manual_seed(7)
    new = [(ctx.data.to_device(x, "cpu"), y) for e, skip, n in schedule for x, y in epoch_loader(ctx, plan, e, skip, n)]
    assert len(ctx.loaders) == 1 and next(iter(ctx.loaders.values())).loader is epoch_loader(ctx, plan, 0, 0, 1)
    torch.manual_seed(7)
    reference = []
    for e, skip, n in schedule:
        sampler = EpochLoader(ctx.data.train, 64, seed=seed).sampler
        sampler.set_epoch(e)
        indices = list(sampler)[skip * 64 : n * 64]
        reference += list(make_loader(old, 64, sampler=indices, drop_last=True, seed=stream_seed(0, "supernet", e)))
    assert_same_batches(new, reference)


class Noise(torch.utils.data.Dataset):
    """Every item a fresh draw of torch's RNG: what it returns depends on the worker's seed alone."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.rand(()), i


def test_epoch_loader_workers_seed_by_rank_and_epoch_and_persist():
    def epoch(loader: EpochLoader, e: int) -> torch.Tensor:
        return torch.cat([x for x, _ in loader.epoch(e, 0, 32)])

    ranks = [EpochLoader(Noise(), 4, seed=5, rank=r, world_size=2, num_workers=2) for r in (0, 1)]
    first = [epoch(loader, 0) for loader in ranks]
    assert not torch.equal(first[0], first[1]), "rank 1's workers must not repeat rank 0's draws"
    workers = ranks[0].loader._iterator._workers
    later = epoch(ranks[0], 1)
    assert ranks[0].loader._iterator._workers == workers, "the workers persist across epochs"
    assert not torch.equal(later, first[0])
    fresh = EpochLoader(Noise(), 4, seed=5, rank=0, world_size=2, num_workers=2)
    assert torch.equal(epoch(fresh, 1), later), "an epoch's draws do not depend on the earlier epochs (resume)"
    shared = [make_loader(Noise(), 4, sampler=range(16), num_workers=1, rank=r) for r in (0, 1, 0)]
    a, b, c = (torch.cat([x for x, _ in loader]) for loader in shared)
    assert torch.equal(a, c) and not torch.equal(a, b)


@needs_fmnist
def test_fixed_batches_are_the_old_materialized_ones_in_memory_and_on_disk(tmp_path):
    """World size 1: the recal / search batches normalise to the old float batches, from memory or memmap."""
    memory, disk = smoke_ctx(tmp_path / "memory"), smoke_ctx(tmp_path / "disk", host_cache_gib=0.0)
    s = memory.cfg.search
    old_recal = old_view(memory.data, memory.data.recal, pad=2, flip=True)
    with torch.random.fork_rng(devices=[]):
        seed_torch(0, "search", 1)
        n = s.recal_batches * s.recal_batch_size
        expected = list(
            make_loader(old_recal, s.recal_batch_size, sampler=list(range(n)), seed=stream_seed(0, "search"))
        )
    old_search = old_view(memory.data, memory.data.search)
    expected_search = list(make_loader(old_search, s.eval_batch_size, sampler=list(range(s.eval_images))))
    state = torch.get_rng_state()
    for ctx in (memory, disk):
        assert_same_batches(ctx.recal_batches, expected)
        assert_same_batches(ctx.recal_batches, expected)  # replayed, not redrawn
        assert_same_batches(ctx.search_batches, expected_search)
    assert torch.equal(torch.get_rng_state(), state), "drawing the fixed batches leaves the global RNG alone"
    assert not memory.recal_batches.batches.on_disk and disk.recal_batches.batches.on_disk
    assert sorted(p.name for p in (tmp_path / "disk" / "fixed").iterdir()) == [
        "recal.images.npy",
        "recal.labels.npy",
        "search.images.npy",
        "search.labels.npy",
    ]


def test_draw_keeps_the_batch_boundaries_and_refuses_floats(tmp_path):
    x = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(10)
    source = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4)]
    for path in (None, tmp_path / "f"):
        fixed = draw(source, 9, 4, path)
        assert [len(b) for b, _ in fixed] == [4, 4, 1] and len(fixed) == 3
        assert torch.equal(torch.cat([b for b, _ in fixed]), x[:9]) and torch.equal(fixed.targets, y[:9])
    assert isinstance(FixedBatches.open(tmp_path / "f", 4).images, np.ndarray)
    with pytest.raises(TypeError, match="uint8"):
        draw([(x.float(), y)], 2, 2)
    with pytest.raises(ValueError, match="held 10"):
        draw(source, 11, 4)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"host_cache_gib": -1}, "host_cache_gib must be >= 0"),
        ({"num_workers": -1}, "num_workers must be a whole number >= 0"),
    ],
)
def test_bad_data_settings_are_one_line_errors(data, message):
    with pytest.raises(ConfigError, match=message) as err:
        preset_config("smoke", {"data": data}, method="spos")
    assert "\n" not in str(err.value)
