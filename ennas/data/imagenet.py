"""ImageNet: ILSVRC2012 as train/<wnid>/ and val/<wnid>/ folders, decoded on demand, SPOS/timm transforms (uint8 out)."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision import transforms as T

from ennas.data.augment import DeviceAugment
from ennas.data.storage import DataError, ImageFiles, Source, few

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet_classes(root: str | Path | None) -> tuple[Path, list[str]]:
    """Check the train/<wnid>/, val/<wnid>/ layout and return the root and the class folders."""
    if root is None:
        raise DataError("imagenet needs --data ROOT, the ILSVRC2012 folder holding train/ and val/")
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"ImageNet root {folder} does not exist; pass --data ROOT holding train/ and val/")
    classes = {}
    for split in ("train", "val"):
        path = folder / split
        if not path.is_dir():
            raise DataError(f"{folder} has no {split}/ folder; expected {split}/<wnid>/*.JPEG under it")
        entries = list(os.scandir(path))
        classes[split] = sorted(e.name for e in entries if e.is_dir())
        if not classes[split]:
            files = sum(e.is_file() for e in entries)
            raise DataError(
                f"{path} holds {files} file(s) but no class folders; sort its images into "
                f"{split}/<wnid>/ folders (for val/, e.g. with the usual valprep.sh)"
            )
    train, val = set(classes["train"]), set(classes["val"])
    if train != val:
        raise DataError(
            f"class folders differ between train/ and val/ (only in train: {few(sorted(train - val))}; "
            f"only in val: {few(sorted(val - train))}); both need the same <wnid> folders"
        )
    return folder, classes["train"]


def imagenet(
    root: str | Path | None = None,
    *,
    resolution: int = 224,
    crop_pct: float = 0.875,
    verify: bool = False,
    max_bad: int | None = None,
    bad_fraction: float = 0.01,
) -> Source:
    """ILSVRC2012 as train/<wnid>/ and val/<wnid>/ folders, with the standard SPOS/timm transforms."""
    folder, classes = _imagenet_classes(root)
    train, test = (ImageFiles(folder / split, max_bad=max_bad, bad_fraction=bad_fraction) for split in ("train", "val"))
    if verify:
        train.verify()
        test.verify()
    # PILToTensor ships uint8; the device divides by 255 and normalises, as ToTensor + Normalize did here.
    train_transform = T.Compose(
        [
            T.RandomResizedCrop(resolution),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            T.PILToTensor(),
        ]
    )
    eval_size = int(resolution / crop_pct)  # 256 for 224, as timm floors it
    eval_transform = T.Compose([T.Resize(eval_size), T.CenterCrop(resolution), T.PILToTensor()])
    return Source(
        train=train,
        test=test,
        train_transform=train_transform,
        eval_transform=eval_transform,
        num_classes=len(classes),
        in_chans=3,
        resolution=resolution,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        recal_size=200 * 128,  # SPOS: 200 batches of 128
        device_train_transform=DeviceAugment(resolution),  # the same recipe for data.decode=device
    )
