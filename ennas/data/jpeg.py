"""Image files shipped as bytes by loader workers and decoded a batch at a time on the device (data.decode=device).

With data.decode=cpu every worker decodes and augments its images with PIL, and on a GPU machine that takes
many CPU cores per GPU to keep up. Here workers only read files; `EncodedBatch.decode` runs
torchvision.io.decode_jpeg on the whole batch on the device (nvJPEG on a GPU) and ennas.data.augment augments
it there. Files decode_jpeg cannot read (ILSVRC2012 holds a PNG named .JPEG and a few CMYK JPEGs) are found
from their headers in the worker and decoded with PIL on the CPU, exactly as the CPU path decodes them.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from ennas.data.storage import UNREADABLE, DataError, ImageFiles

# Frame headers decode_jpeg reads on the CPU and with nvJPEG alike: baseline, extended and progressive Huffman.
_DEVICE_FRAMES = (0xC0, 0xC1, 0xC2)
_OTHER_FRAMES = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)  # lossless, hierarchical, arithmetic


def device_decodable(data: np.ndarray) -> bool:
    """Whether the file bytes are a JPEG that decode_jpeg reads on any device: a Huffman frame of 1 or 3 channels.

    Only the headers are read (a few hundred bytes), so workers can sort files cheaply; CMYK (4 channels),
    PNG and anything unusual go to PIL, since nvJPEG's handling of them differs between versions.
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _DEVICE_FRAMES:
            return i + 9 < len(data) and int(data[i + 9]) in (1, 3)  # FF Cx, length, precision, height, width, Nf
        if marker in _OTHER_FRAMES or marker == 0xDA:  # a frame we leave to PIL, or a scan before any frame
            return False
        i += 2 + (int(data[i + 2]) << 8 | int(data[i + 3]))
    return False


class EncodedFile(NamedTuple):
    """One item of an EncodedView: the file's bytes, its path (for messages) and whether decode_jpeg reads it."""

    data: torch.Tensor  # uint8, 1-D
    path: str
    jpeg: bool


@dataclass(frozen=True)
class EncodedBatch:
    """A batch of image files as one flat byte tensor (one transfer from a worker), decoded by `decode`.

    `seed` is set by the EpochLoader from (seed, epoch, step) and seeds the device augmentation; a batch without
    one (from a plain DataLoader) draws its seed from torch's global RNG, as in-process CPU augmentation does.
    """

    flat: torch.Tensor  # uint8: every file's bytes one after another
    offsets: tuple[int, ...]  # file k is flat[offsets[k]:offsets[k + 1]]
    paths: tuple[str, ...]
    jpeg: tuple[bool, ...]  # decode_jpeg reads file k (device_decodable)
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def files(self) -> list[torch.Tensor]:
        """Each file's bytes, as views of `flat`."""
        return [self.flat[a:b] for a, b in zip(self.offsets, self.offsets[1:])]

    def seeded(self, seed: int) -> EncodedBatch:
        """The batch with the seed of its augmentation."""
        return dataclasses.replace(self, seed=seed)

    def generator(self) -> torch.Generator:
        """The private generator the batch's augmentation draws from (CPU, so every device draws alike)."""
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()).item())
        return torch.Generator().manual_seed(seed)

    def pin_memory(self) -> EncodedBatch:
        """Called by DataLoader's pinning thread (pin_memory=True on GPU machines)."""
        return dataclasses.replace(self, flat=self.flat.pin_memory())

    def decode(self, device: torch.device | str) -> list[torch.Tensor]:
        """Every image as uint8 RGB (3, H, W) on `device`: decode_jpeg for the batch, PIL for the rest.

        A file neither reads stops the run with a one-line DataError naming it (see `_pil`).
        """
        device = torch.device(device)
        files = self.files()
        fast = [k for k, ok in enumerate(self.jpeg) if ok]
        images: list[torch.Tensor | None] = [None] * len(files)
        for k, image in zip(fast, _decode_jpegs([files[k] for k in fast], device), strict=True):
            images[k] = image
        return [image if image is not None else _pil(files[k], self.paths[k], device) for k, image in enumerate(images)]


def _decode_jpegs(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """decode_jpeg on the batch at once; if that fails, image by image, with None for each that fails."""
    if not files:
        return []
    where = device if device.type in ("cpu", "cuda") else torch.device("cpu")  # decode_jpeg's devices
    try:
        images = decode_jpeg(files, mode=ImageReadMode.RGB, device=where)
    except RuntimeError:
        images = []
        for data in files:
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=where))
            except RuntimeError:
                images.append(None)
    return [None if image is None else image.to(device) for image in images]


def _pil(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    """One file decoded by PIL on the CPU as ImageFolder's loader does it (convert("RGB")), then moved to `device`.

    Unlike the CPU path, which skips an unreadable file for the next item of the view and counts it, a file
    here has already been drawn into a batch whose labels are fixed, so it is a one-line error instead.
    """
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            rgb = image.convert("RGB")
    except UNREADABLE as err:
        raise DataError(
            f"cannot decode {path} ({err}); with data.decode=device an unreadable image stops the run: drop such "
            "files at start with data.options.verify=true, or use data.decode=cpu, which skips them"
        ) from None
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).to(device)


class EncodedView(Dataset):
    """The items of an ImageFiles view as file bytes: what loader workers read when the device decodes."""

    def __init__(self, base: ImageFiles, indices: torch.Tensor) -> None:
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> torch.Tensor:
        """Labels of this view's items, in order."""
        return self.base.targets[self.indices]

    def __getitem__(self, j: int) -> tuple[EncodedFile, int]:
        path, target = self.base.samples[int(self.indices[j])]
        try:
            data = read_file(path)
        except (OSError, RuntimeError) as err:
            raise DataError(f"cannot read {path} ({err}); check the dataset folder, or use data.decode=cpu") from None
        return EncodedFile(data, path, device_decodable(data.numpy())), target

    @staticmethod
    def collate(items: list[tuple[EncodedFile, int]]) -> tuple[EncodedBatch, torch.Tensor]:
        """A DataLoader collate_fn: (EncodedBatch, int64 labels), the bytes concatenated into one tensor."""
        files = [f for f, _ in items]
        offsets = np.cumsum([0] + [len(f.data) for f in files]).tolist()
        flat = torch.cat([f.data for f in files]) if files else torch.empty(0, dtype=torch.uint8)
        batch = EncodedBatch(flat, tuple(offsets), tuple(f.path for f in files), tuple(f.jpeg for f in files))
        return batch, torch.tensor([t for _, t in items])
