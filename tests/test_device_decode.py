"""data.decode=device: workers ship ImageNet's file bytes; to_device decodes and augments them (here on the CPU).

The same code runs on a GPU (nvJPEG, CUDA tensor ops); benchmark/gpu_check.sh measures it there. On the CPU
decode_jpeg is libjpeg-turbo, whose pixels equal PIL's, so decoding is checked against the CPU path exactly.
"""

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import preset_config
from PIL import Image

from benchmark.perf import jpeg_folder
from ennas.core.config import ConfigError
from ennas.core.loop import EpochPlan, epoch_loader
from ennas.data import DataError, EncodedBatch, EncodedView, EpochLoader, build_data
from ennas.data.augment import DeviceAugment, crop_box
from ennas.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ennas.data.jpeg import device_decodable

pytestmark = pytest.mark.usefixtures("one_thread")

# Odd files as ILSVRC2012 has them (a PNG named .JPEG, CMYK JPEGs) and other JPEG kinds, in train/n00000000/.
ODD = {
    "grey": ("L", "JPEG", {}),
    "png": ("RGB", "PNG", {}),
    "cmyk": ("CMYK", "JPEG", {}),
    "prog": ("RGB", "JPEG", {"progressive": True}),
}
BATCH = 6


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = jpeg_folder(tmp_path_factory.mktemp("jpegs"), 20, size=(96, 80))
    rng = np.random.default_rng(1)
    for name, (mode, fmt, kw) in ODD.items():
        coarse = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).resize((70, 60), Image.BILINEAR)
        coarse.convert(mode).save(folder / "train" / "n00000000" / f"odd_{name}.JPEG", format=fmt, **kw)
    return folder


@pytest.fixture(scope="module")
def data(root):
    return build_data("imagenet", root, resolution=32, search_size=0, recal_size=0)


def pil_rgb(path: str) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def whole(view: EncodedView) -> EncodedBatch:
    return view.collate([view[j] for j in range(len(view))])[0]


def epoch(loader: EpochLoader, e: int, data, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(data.to_device(x, "cpu"), y) for x, y in loader.epoch(e, start)]


def test_workers_send_jpegs_to_decode_jpeg_and_the_rest_to_pil(data):
    view = data.loader_view(data.train, "device")
    assert isinstance(view, EncodedView) and len(view) == len(data.train) == 24
    flags = {Path(f.path).stem: f.jpeg for f, _ in (view[j] for j in range(len(view)))}
    assert flags.pop("odd_png") is False and flags.pop("odd_cmyk") is False  # left to PIL
    assert all(flags.values()) and flags["odd_grey"] and flags["odd_prog"]
    assert not device_decodable(np.frombuffer(b"\xff\xd8\xff\xda\x00\x02", np.uint8))  # a scan before any frame


def test_every_file_decodes_to_the_rgb_image_the_cpu_path_reads(data):
    batch = whole(data.loader_view(data.train, "device"))
    images = batch.decode("cpu")
    assert len(images) == len(batch) == 24
    for path, image in zip(batch.paths, images, strict=True):
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert torch.equal(image, pil_rgb(path)), path  # greyscale as 3 channels, CMYK and PNG through PIL


def test_device_batches_are_normalised_uint8_crops_with_tensor_labels(data):
    loader = EpochLoader(data.loader_view(data.train, "device"), BATCH, seed=0)
    batches = list(loader.epoch(0))
    assert len(batches) == 4 and all(isinstance(x, EncodedBatch) and x.seed is not None for x, _ in batches)
    low = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    for x, y in batches:
        out = data.to_device(x, "cpu")
        assert out.shape == (BATCH, 3, 32, 32) and out.dtype == torch.float32
        assert (out >= low - 1e-6).all() and (out <= high + 1e-6).all() and out.std() > 0.1
        assert y.dtype == torch.int64 and y.shape == (BATCH,)
    order = [i for _, i in loader.window.keys]
    assert torch.equal(torch.cat([y for _, y in batches]), data.train.targets[order])


def test_same_seed_same_batches_steps_differ_and_workers_or_resumes_change_nothing(data):
    view = data.loader_view(data.train, "device")
    first = epoch(EpochLoader(view, BATCH, seed=3), 0, data)
    again = epoch(EpochLoader(view, BATCH, seed=3), 0, data)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again, strict=True))
    resumed = epoch(EpochLoader(view, BATCH, seed=3), 0, data, start=2 * BATCH)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first[2:], resumed, strict=True))
    workers = epoch(EpochLoader(view, BATCH, seed=3, num_workers=1), 0, data)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, workers, strict=True))
    x, _ = next(iter(EpochLoader(view, BATCH, seed=3).epoch(0)))
    other_step = data.to_device(x.seeded(x.seed + 1), "cpu")
    assert not torch.equal(other_step, first[0][0]), "the same images at another step get other crops"
    assert not torch.equal(epoch(EpochLoader(view, BATCH, seed=4), 0, data)[0][0], first[0][0])


def test_a_batch_outside_an_epoch_loader_draws_from_the_global_rng(data):
    batch = whole(data.loader_view(data.train, "device"))
    torch.manual_seed(5)
    a = data.to_device(batch, "cpu")
    torch.manual_seed(5)
    assert torch.equal(a, data.to_device(batch, "cpu"))


def test_without_randomness_the_augmentation_is_a_resize_of_the_whole_image():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    fixed = DeviceAugment(16, scale=(1.0, 1.0), ratio=(1.5, 1.5), jitter=(0.0, 0.0, 0.0))
    out = fixed([image] * 8, torch.Generator().manual_seed(0))
    resized = F.interpolate(image[None].float(), size=(16, 16), mode="bilinear", antialias=True)
    expected = resized.round().clamp(0, 255).to(torch.uint8)[0]
    flipped = [torch.equal(o, expected.flip(-1)) for o in out]
    assert all(f or torch.equal(o, expected) for f, o in zip(flipped, out)) and 0 < sum(flipped) < 8


def test_crops_stay_inside_the_image_with_the_allowed_share_and_aspect():
    g = torch.Generator().manual_seed(0)
    for height, width in ((80, 96), (30, 300), (500, 375)):
        for _ in range(200):
            top, left, h, w = crop_box(
                height, width, torch.rand(10, 2, generator=g), torch.rand(2, generator=g), (0.08, 1.0), (3 / 4, 4 / 3)
            )
            assert 0 <= top <= height - h and 0 <= left <= width - w and h > 0 and w > 0
            if (height, width) != (30, 300):  # the wide image falls back to its central 4:3 crop
                assert 0.08 * height * width * 0.9 <= h * w <= height * width
                assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_decode_cpu_leaves_the_training_view_and_its_batches_as_they_were(root, data):
    for view in (data.train, data.search, data.recal, data.test):
        assert data.loader_view(view, "cpu") is view
    for view in (data.search, data.recal, data.test):
        assert data.loader_view(view, "device") is view  # drawn once per run: the CPU path
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(data.to_device(x, "cpu"), data.normalize(x))
    cfg = preset_config("imagenet", {"data": {"root": str(root), "num_workers": 0}}, method="spos", space="s1")
    ctx = SimpleNamespace(cfg=cfg, data=data, loaders={})
    plan = EpochPlan(data.train, BATCH, 1, stream="supernet")
    torch.manual_seed(0)
    got = [(data.to_device(x, "cpu"), y) for x, y in epoch_loader(ctx, plan, 0, 0, 4)]
    torch.manual_seed(0)
    keys = next(iter(ctx.loaders.values())).window.keys
    items = [data.train[i] for _, i in keys]  # the View's own output, in the loader's order
    expected = torch.stack([image for image, _ in items])
    assert torch.equal(torch.cat([x for x, _ in got]), data.normalize(expected))
    assert torch.equal(torch.cat([y for _, y in got]), torch.tensor([t for _, t in items]))


def test_decode_device_reaches_the_training_loop(root, data):
    cfg = preset_config(
        "imagenet", {"data": {"root": str(root), "decode": "device", "num_workers": 0}}, method="spos", space="s1"
    )
    assert cfg.data.decode == "device"
    ctx = SimpleNamespace(cfg=cfg, data=data, loaders={})
    x, y = next(iter(epoch_loader(ctx, EpochPlan(data.train, BATCH, 1, stream="supernet"), 0, 0, 1)))
    assert isinstance(x, EncodedBatch) and data.to_device(x, "cpu").shape == (BATCH, 3, 32, 32)


def test_an_image_no_decoder_reads_is_a_one_line_error_naming_it():
    junk = torch.frombuffer(bytearray(b"\xff\xd8\xff\xc0\x00\x11\x08" + bytes(40)), dtype=torch.uint8)
    for jpeg in (True, False):
        batch = EncodedBatch(junk, (0, len(junk)), ("train/n0/broken.JPEG",), (jpeg,), seed=0)
        with pytest.raises(DataError, match="cannot decode train/n0/broken.JPEG.*data.options.verify") as err:
            batch.decode("cpu")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "data_cfg, message",
    [
        ({"decode": "gpu"}, "data: decode must be cpu or device, got 'gpu'"),
        ({"decode": "device"}, "data: decode=device decodes ImageNet's JPEG files.*'fashion-mnist'.*data.decode=cpu"),
    ],
)
def test_bad_decode_settings_are_one_line_config_errors(data_cfg, message):
    with pytest.raises(ConfigError, match=message) as err:
        preset_config("smoke", {"data": data_cfg}, method="spos")
    assert "\n" not in str(err.value)


def test_bad_decode_in_the_data_layer_is_a_one_line_data_error(data):
    with pytest.raises(DataError, match="data.decode must be one of cpu, device, got 'gpu'"):
        data.loader_view(data.train, "gpu")
    synthetic = build_data("synthetic", n_train=64, n_test=8, search_size=8)
    with pytest.raises(DataError, match="data.decode=device .* dataset 'synthetic' has no such path") as err:
        synthetic.loader_view(synthetic.train, "device")
    assert "\n" not in str(err.value)


def test_odd_files_are_what_ilsvrc_holds(root):
    """The fixture's odd files really are greyscale, CMYK and PNG (else the fallback goes untested)."""
    folder = root / "train" / "n00000000"
    modes = {name: Image.open(folder / f"odd_{name}.JPEG") for name in ODD}
    assert modes["grey"].mode == "L" and modes["cmyk"].mode == "CMYK" and modes["png"].format == "PNG"
    assert io.BytesIO((folder / "odd_png.JPEG").read_bytes()).read(4) == b"\x89PNG"
