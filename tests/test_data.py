"""Fast tests of the data layer: real Fashion-MNIST, a tiny ImageFolder tree, splits, the epoch sampler."""

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ennas.data import DataError, EpochSampler, View, build_data, fashion_mnist, make_loader, split_indices
from ennas.seeding import generator

FMNIST = fashion_mnist.FASHION_MNIST_ROOT
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian package dataset-fashion-mnist not installed (no IDX files under {FMNIST})",
)


def indices(view: View) -> set[int]:
    return set(view.indices.tolist())


# ---- Fashion-MNIST ----


@pytest.fixture(scope="module")
def fmnist():
    return build_data("fashion-mnist", seed=0)


@needs_fmnist
def test_fashion_mnist_sizes_and_labels(fmnist):
    train_base, test_base = fmnist.train.base, fmnist.test.base
    assert train_base.images.shape == (60_000, 1, 28, 28) and train_base.images.dtype == torch.uint8
    assert len(test_base) == 10_000
    assert torch.bincount(train_base.targets).tolist() == [6_000] * 10
    assert torch.bincount(test_base.targets).tolist() == [1_000] * 10
    # First labels, read from the IDX files independently of the loader.
    assert train_base.targets[:5].tolist() == [9, 0, 0, 3, 0]
    assert test_base.targets[:5].tolist() == [9, 2, 1, 1, 6]
    assert (fmnist.num_classes, fmnist.in_chans, fmnist.resolution) == (10, 1, 28)
    # Default search split: the same proportion SPOS holds out of ImageNet.
    assert len(fmnist.search) == round(60_000 * 50_000 / 1_281_167) == 2_342
    assert len(fmnist.train) + len(fmnist.search) == 60_000 and len(fmnist.recal) == 2_048
    x, y = fmnist.test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.uint8 and y == 9
    # Normalised on the device with the dataset's constants: the whole test set has mean ~0, std ~1.
    xs = fmnist.to_device(torch.stack([fmnist.test[i][0] for i in range(0, 10_000, 10)]), "cpu")
    assert abs(xs.mean()) < 0.05 and abs(xs.std() - 1) < 0.05


@needs_fmnist
def test_fashion_mnist_splits_disjoint_and_stable(fmnist):
    train, search, recal = indices(fmnist.train), indices(fmnist.search), indices(fmnist.recal)
    assert not train & search and train | search == set(range(60_000))
    assert recal <= train
    # The test set is separate storage, and the training views never index into it.
    assert fmnist.test.base is not fmnist.train.base and fmnist.search.base is fmnist.train.base
    again, other = build_data("fashion-mnist", seed=0), build_data("fashion-mnist", seed=1)
    assert torch.equal(again.search.indices, fmnist.search.indices)
    assert torch.equal(again.recal.indices, fmnist.recal.indices)
    assert indices(other.search) != search


@needs_fmnist
def test_test_size_keeps_the_first_test_images_and_leaves_the_training_splits_alone(fmnist):
    short = build_data("fashion-mnist", seed=0, test_size=300)
    assert short.test.indices.tolist() == list(range(300))
    assert [short.test[i][1] for i in (0, 299)] == [fmnist.test[i][1] for i in (0, 299)]
    for split in ("train", "search", "recal"):
        assert torch.equal(getattr(short, split).indices, getattr(fmnist, split).indices)


@needs_fmnist
def test_fashion_mnist_augmentation_reproducible(fmnist):
    torch.manual_seed(3)
    a = [fmnist.train[i][0] for i in range(8)]
    torch.manual_seed(3)
    b = [fmnist.train[i][0] for i in range(8)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(fmnist.train[0][0], fmnist.search[0][0])  # different images, different transforms
    assert torch.equal(fmnist.search[0][0], fmnist.search[0][0])  # eval transforms are deterministic


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def tiny_idx_root(root: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_fashion_mnist_reads_any_root(tmp_path):
    data = build_data("fashion-mnist", tiny_idx_root(tmp_path), search_size=4)
    assert (len(data.train), len(data.search), len(data.recal), len(data.test)) == (16, 4, 16, 20)
    assert data.train[0][0].shape == (1, 28, 28)


def test_fashion_mnist_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_ROOT", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist, or pass --data ROOT"):
        build_data("fashion-mnist")
    with pytest.raises(DataError, match="root does not exist"):
        build_data("fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte.gz"):
        build_data("fashion-mnist", tmp_path)
    root = tiny_idx_root(tmp_path)
    images = root / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))  # a valid gzip of a truncated IDX file
    with pytest.raises(DataError, match="truncated or corrupt: its header promises"):
        build_data("fashion-mnist", root)
    images.write_bytes(gzip.compress(raw)[:-50])  # a truncated gzip stream
    with pytest.raises(DataError, match="truncated or corrupt"):
        build_data("fashion-mnist", root)
    images.write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(DataError, match="not an IDX file"):
        build_data("fashion-mnist", root)


# ---- ImageNet folders ----


def write_jpegs(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=80)


def tiny_imagenet(root: Path, classes=("n01", "n02", "n03"), n_train: int = 6, n_val: int = 2) -> Path:
    for k, wnid in enumerate(classes):
        write_jpegs(root / "train" / wnid, n_train, seed=k)
        write_jpegs(root / "val" / wnid, n_val, seed=100 + k)
    return root


def build_tiny(root: Path, **kw):
    return build_data("imagenet", root, resolution=32, search_size=3, recal_size=4, **kw)


def test_imagenet_tiny_tree(tmp_path):
    data = build_tiny(tiny_imagenet(tmp_path))
    assert (data.num_classes, data.in_chans, data.resolution) == (3, 3, 32)
    assert (len(data.train), len(data.search), len(data.recal), len(data.test)) == (15, 3, 4, 6)
    for view in (data.train, data.search, data.recal, data.test):
        x, y = view[0]
        assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and 0 <= y < 3
    assert data.test.targets.tolist() == [0, 0, 1, 1, 2, 2]
    xs, ys = next(iter(make_loader(data.train, 5, shuffle=True)))
    assert xs.shape == (5, 3, 32, 32) and ys.shape == (5,)
    assert indices(data.train).isdisjoint(indices(data.search))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda r: r / "missing", "ImageNet root .*missing does not exist"),
        (lambda r: remove(tiny_imagenet(r), "val"), "has no val/ folder"),
        (lambda r: remove(tiny_imagenet(r), "train"), "has no train/ folder"),
        (lambda r: flatten_val(tiny_imagenet(r)), "holds 6 file\\(s\\) but no class folders.*valprep"),
        (lambda r: empty_class(tiny_imagenet(r)), "empty class folder\\(s\\) in .*train: n02"),
        (lambda r: tiny_imagenet(r / "a", ("n01", "n02")) and add_val(r / "a", "n09"), "only in val: n09"),
    ],
    ids=["no-root", "no-val", "no-train", "flat-val", "empty-class", "classes-differ"],
)
def test_imagenet_bad_layouts(tmp_path, break_it, message):
    root = break_it(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        build_tiny(root)
    assert "\n" not in str(err.value)


def remove(root: Path, split: str) -> Path:
    (root / split).rename(root / f"{split}.old")
    return root


def flatten_val(root: Path) -> Path:
    for path in sorted((root / "val").glob("*/*.JPEG")):
        path.rename(root / "val" / f"{path.parent.name}_{path.name}")
    for folder in (root / "val").iterdir():
        if folder.is_dir():
            folder.rmdir()
    return root


def empty_class(root: Path) -> Path:
    for path in (root / "train" / "n02").iterdir():
        path.unlink()
    return root


def add_val(root: Path, wnid: str) -> Path:
    write_jpegs(root / "val" / wnid, 1, seed=9)
    return root


def test_imagenet_requires_root():
    with pytest.raises(DataError, match="imagenet needs --data ROOT"):
        build_data("imagenet")


def corrupt(root: Path, names=("img_0.JPEG",)) -> None:
    for name in names:
        (root / "train" / "n01" / name).write_bytes(b"\xff\xd8 this is not a jpeg")


def test_imagenet_corrupt_image_skipped_and_counted(tmp_path):
    root = tiny_imagenet(tmp_path)
    corrupt(root)
    data = build_data("imagenet", root, resolution=32, search_size=0, recal_size=0, max_bad=1)
    bad = data.train.base.samples.index((str(root / "train" / "n01" / "img_0.JPEG"), 0))
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        items = [data.train[j] for j in range(len(data.train))]
    assert data.train.base.bad == {bad}
    assert len(items) == 18 and all(x.shape == (3, 32, 32) for x, _ in items)
    # The bad item was replaced by the next one of the same view.
    assert items[bad][1] == data.train.targets[bad + 1]


def test_imagenet_too_many_corrupt(tmp_path):
    root = tiny_imagenet(tmp_path)
    corrupt(root, ("img_0.JPEG", "img_1.JPEG"))
    data = build_data("imagenet", root, resolution=32, search_size=0, recal_size=0, max_bad=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="2 unreadable image\\(s\\) in .*more than the 1 allowed"):
            [data.train[j] for j in range(len(data.train))]
    # Raised inside a DataLoader worker, it still reaches the caller as one line.
    with pytest.raises(DataError, match="^2 unreadable image") as err:
        list(make_loader(data.train, 6, num_workers=2))
    assert "\n" not in str(err.value)
    # The default allows 1% of the images: none of these 18.
    default = build_data("imagenet", root, resolution=32, search_size=0, recal_size=0)
    with pytest.raises(DataError, match="more than the 0 allowed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default.train[0]


def test_imagenet_verify(tmp_path):
    root = tiny_imagenet(tmp_path)
    corrupt(root)
    with pytest.warns(UserWarning, match="dropped 1 unreadable image"):
        data = build_tiny(root, verify=True, max_bad=1)
    assert len(data.train) + len(data.search) == 17
    with pytest.raises(DataError, match="unreadable image.*more than the 0 allowed"):
        build_tiny(root, verify=True)


# ---- registry, splits ----


def test_registry_errors():
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known: fashion-mnist, imagenet, synthetic"):
        build_data("mnist")
    with pytest.raises(DataError, match="dataset 'synthetic' has no option colour; its options: n_train"):
        build_data("synthetic", colour=True)
    with pytest.raises(DataError, match="search_size=-1 must be in"):
        build_data("synthetic", n_train=100, search_size=-1)


def test_split_sizes_meant_for_a_larger_dataset_scale_down_with_a_note(capsys):
    data = build_data("synthetic", n_train=100, search_size=100, recal_size=99)
    assert (len(data.search), len(data.train), len(data.recal)) == (25, 75, 75)  # a quarter; recal <= train
    assert "note: data.search_size 100 is over half of the 100 training images; using 25" in capsys.readouterr().err
    assert len(build_data("synthetic", n_train=100, search_size=50).search) == 50  # half is meant: kept
    with pytest.raises(DataError, match="too few for a search split of at least 20 \\(2 per class\\)"):
        build_data("synthetic", n_train=60, search_size=40)  # 10 classes: a quarter of 60 is under the floor


def test_split_indices_stable_and_disjoint():
    train, search, recal = split_indices(1000, seed=0, search_size=100, recal_size=50)
    assert set(train.tolist()).isdisjoint(search.tolist())
    assert sorted(train.tolist() + search.tolist()) == list(range(1000))
    assert set(recal.tolist()) <= set(train.tolist()) and len(set(recal.tolist())) == 50
    torch.manual_seed(123)  # the global RNG must not matter
    again = split_indices(1000, seed=0, search_size=100, recal_size=50)
    assert all(torch.equal(a, b) for a, b in zip((train, search, recal), again, strict=True))
    assert not torch.equal(search, split_indices(1000, seed=1, search_size=100, recal_size=50)[1])


# ---- EpochSampler and loaders ----


def test_epoch_sampler_fraction_covers_once():
    sampler = EpochSampler(103, seed=5, fraction=1 / 4)
    seen = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        chunk = list(sampler)
        assert len(chunk) == len(sampler) in (25, 26)
        seen += chunk
    assert sorted(seen) == list(range(103))
    sampler.set_epoch(4)  # the next round: a new permutation
    assert list(sampler) != seen[: len(sampler)]


def test_epoch_sampler_ranks_shard_the_chunk():
    for n in (100, 103):
        whole = EpochSampler(n, seed=1, fraction=0.25)
        ranks = [EpochSampler(n, seed=1, fraction=0.25, rank=r, world_size=2) for r in range(2)]
        for epoch in (0, 5):
            for s in (whole, *ranks):
                s.set_epoch(epoch)
            a, b = (list(s) for s in ranks)
            assert len(a) == len(b) == len(ranks[0]) == len(ranks[1])
            assert set(a) | set(b) == set(whole) and len(set(a)) == len(a)
            if len(whole) % 2 == 0:
                assert set(a).isdisjoint(b)
            else:  # padded by wrapping, as DistributedSampler: the one repeat is the chunk's first index
                assert set(a) & set(b) == {list(whole)[0]}


def test_epoch_sampler_deterministic_from_seed_and_epoch():
    def order(seed, epoch, global_seed):
        torch.manual_seed(global_seed)
        s = EpochSampler(50, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 3, 1) == order(0, 3, 2)
    assert order(0, 3, 1) != order(0, 4, 1) and order(0, 3, 1) != order(1, 3, 1)
    unshuffled = EpochSampler(10, seed=0, shuffle=False, fraction=0.5)
    assert list(unshuffled) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="1/m"):
        EpochSampler(10, seed=0, fraction=0.3)


def test_generator_streams_distinct():
    def draw(*key):
        return torch.randint(0, 2**31, (4,), generator=generator(*key)).tolist()

    assert draw(0, 3) == draw(0, 3)
    assert len({str(draw(*key)) for key in [(0,), (0, 0), (0, 0, 0), (1,), (0, 1), (1, 0)]}) == 6


def test_make_loader_reproducible_with_workers():
    data = build_data("synthetic", n_train=64, n_test=16, search_size=8)

    def batches(seed):
        loader = make_loader(data.train, 16, shuffle=True, seed=seed, num_workers=2)
        return [(x, y) for x, y in loader]

    a, b, c = batches(0), batches(0), batches(1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])


# ---- synthetic ----


def test_synthetic_deterministic():
    a, b = build_data("synthetic", n_train=200, n_test=50), build_data("synthetic", n_train=200, n_test=50)
    assert torch.equal(a.train.base.images, b.train.base.images) and torch.equal(a.test.targets, b.test.targets)
    other = build_data("synthetic", n_train=200, n_test=50, data_seed=1)
    assert not torch.equal(a.train.base.images, other.train.base.images)
    rgb = build_data("synthetic", n_train=40, n_test=10, in_chans=3, resolution=16, num_classes=4)
    assert rgb.train[0][0].shape == (3, 16, 16) and rgb.num_classes == 4


def test_synthetic_learnable():
    data = build_data("synthetic")
    train = data.train.base.images[data.train.indices].float()
    means = torch.stack([train[data.train.targets == c].mean(0) for c in range(10)])
    test = data.test.base.images.float()
    predicted = torch.cdist(test.flatten(1), means.flatten(1)).argmin(1)
    assert (predicted == data.test.targets).float().mean() > 0.5  # nearest class mean, chance is 0.1
    # A tiny CNN beats chance clearly within a few steps.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step, (x, y) in enumerate(make_loader(data.train, 64, shuffle=True)):
        loss = torch.nn.functional.cross_entropy(net(data.to_device(x, "cpu")), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 20:
            break
    x, y = next(iter(make_loader(data.test, 512)))
    assert (net(data.to_device(x, "cpu")).argmax(1) == y).float().mean() > 0.4
