"""Fashion-MNIST, the embedded default: Debian's dataset-fashion-mnist IDX files, held in memory as uint8."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ennas.data.storage import DataError, Source, TensorImages, TensorTransform

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FIX = "apt-get install dataset-fashion-mnist, or pass --data ROOT"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)  # measured on its 60,000 training images


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes with numpy, checking the header against the length."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}); {FASHION_MNIST_FIX}") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    if ndim == 0 or raw[:3] != b"\0\0\x08" or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad header); {FASHION_MNIST_FIX}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + math.prod(dims)
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {expected:,} bytes, it has {len(raw):,}; "
            f"{FASHION_MNIST_FIX}"
        )
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_idx_pair(folder: Path, prefix: str) -> TensorImages:
    files = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte"
        found = [folder / f for f in (f"{name}.gz", name) if (folder / f).is_file()]
        if not found:
            raise DataError(f"{folder} has no {name}.gz (nor {name}); {FASHION_MNIST_FIX}")
        files.append(found[0])
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DataError(
            f"{files[0].name} {images.shape} and {files[1].name} {labels.shape} do not form a "
            f"Fashion-MNIST split; {FASHION_MNIST_FIX}"
        )
    # Copies: frombuffer views are read-only, which torch warns about.
    return TensorImages(torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64)))


def fashion_mnist(root: str | Path | None = None) -> Source:
    """The embedded default: Debian's dataset-fashion-mnist IDX files, held in memory as uint8 tensors."""
    folder = Path(root) if root is not None else FASHION_MNIST_ROOT
    if not folder.is_dir():
        where = "not found at" if root is None else "root does not exist:"
        raise DataError(f"Fashion-MNIST {where} {folder}; {FASHION_MNIST_FIX}")
    train, test = _read_idx_pair(folder, "train"), _read_idx_pair(folder, "t10k")
    return Source(
        train=train,
        test=test,
        train_transform=TensorTransform(pad=2, flip=True),
        eval_transform=TensorTransform(),
        num_classes=10,
        in_chans=1,
        resolution=28,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
    )
