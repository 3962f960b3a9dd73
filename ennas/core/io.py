"""Result files written atomically (temp file + rename), so a crash never leaves a half-written file."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: Path, write) -> None:
    """Write through `write(file)` into a temp file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """A whole text file (UTF-8), atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, value: Any) -> None:
    """One JSON document, atomically."""
    _atomic_write(path, lambda f: f.write((json.dumps(value, indent=2, default=str) + "\n").encode()))


def read_json(path: Path) -> Any:
    """One JSON document."""
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, records: list[dict]) -> None:
    """A whole JSON-lines file, atomically (logs are small; rewriting keeps them whole)."""
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a JSON-lines file; a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_torch(path: Path, obj: Any) -> None:
    """A torch checkpoint, atomically.

    Serialised in memory first: torch's zip writer turns a failed write (full disk) into an unreadable
    RuntimeError, where writing the bytes ourselves raises the OSError that names the cause.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """A torch checkpoint written by `save_torch` (our own files: full unpickling is allowed)."""
    return torch.load(path, map_location=map_location, weights_only=False)
