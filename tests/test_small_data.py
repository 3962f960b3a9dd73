"""Small data: the README's smoke command on a tiny ImageFolder runs (split sizes and batches scale down), and a
folder too small even for that is one line naming the setting to change."""

from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.run import main as run_main
from ennas.core.io import read_json
from ennas.data import build_data

CLASSES = ("n01", "n02", "n03")


def image_folder(root: Path, per_class: int, val_per_class: int = 4) -> Path:
    """train/<wnid>/ and val/<wnid>/ folders of small random JPEGs (each class its own mean colour)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(60 + 70 * c, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    return root


def test_the_smoke_preset_runs_on_a_3_class_8_image_folder(tmp_path, capsys):
    root = image_folder(tmp_path / "imagenet", per_class=8)
    out = tmp_path / "run"
    args = ["--method", "spos", "--preset", "smoke", "--dataset", "imagenet", "--data", str(root)]
    small = ["--set", "data.options.resolution=32"]  # the README's command at a small resolution, for speed
    assert run_main([*args, *small, "--set", "threads=1", "--run-dir", str(out)]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "note: data.search_size 512 is over half of the 24 training images; using 6" in err
    assert "note: supernet: batch 64 is more than the 18 images of an epoch; using 18" in err
    final = read_json(out / "final.json")
    assert 0 <= final["top1"] <= 100 and final["dataset"] == "imagenet"
    data = build_data("imagenet", root, search_size=512, recal_size=256)
    assert (len(data.train), len(data.search), len(data.recal)) == (18, 6, 18)


def test_a_folder_too_small_even_for_the_floor_names_the_setting(tmp_path, capsys):
    root = image_folder(tmp_path / "imagenet", per_class=2)
    args = ["--method", "spos", "--preset", "smoke", "--dataset", "imagenet", "--data", str(root)]
    assert run_main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "the training set has 6 images" in lines[0] and "data.search_size" in lines[0]
