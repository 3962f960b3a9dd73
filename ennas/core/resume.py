"""Resume safety: a run folder continues only under the settings it was made with.

A rerun into a folder that holds a run's `config.json` compares the requested configuration with the stored
one. A difference in anything that changes results stops the rerun with one line naming the settings and both
values, instead of silently continuing the old state under the new name (or returning the old `final.json`
and then recording the new settings beside it).
"""

from __future__ import annotations

import json
from pathlib import Path

from ennas.core.config import ConfigError, RunConfig, with_sections
from ennas.core.io import read_json

# Settings that do not change a run's numbers, or change them only as the README documents (the thread count
# reorders floating-point sums): a resume may change them. retrain.seeds only adds retraining seeds to a run (the
# ones it holds stay), so a finished run may be asked for more.
FREE = frozenset({"progress", "threads", "keep_checkpoints", "data.root", "data.num_workers", "retrain.seeds"})
SHOWN = 4  # differences named in the error line


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {"supernet": {"lr": 0.1}} -> {"supernet.lr": 0.1}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def defaults() -> dict:
    """Every setting's default, as dotted keys in JSON form."""
    return flatten(json.loads(json.dumps(with_sections(RunConfig()).to_dict())))


def differences(stored: dict, requested: dict) -> list[tuple[str, object, object]]:
    """(key, stored, requested) for every result-changing setting that differs, in key order.

    A setting the stored run does not have (added to the suite after the run was made) counts as its default:
    new settings default to the behaviour before them, so an older run still resumes under its own settings.
    """
    settings = {k: v for k, v in stored.items() if k != "environment"}  # versions and machine, not settings
    old, new = (flatten(json.loads(json.dumps(v))) for v in (settings, requested))  # compared as JSON reads back
    missing = object()
    known = defaults()
    old |= {k: known[k] for k in new.keys() - old.keys() if k in known}
    keys = sorted((set(old) | set(new)) - FREE)
    return [(k, old.get(k, missing), new.get(k, missing)) for k in keys if old.get(k, missing) != new.get(k, missing)]


def check_resumable(folder: Path, cfg: RunConfig) -> None:
    """Raise a one-line ConfigError if `folder` holds a run made with other result-changing settings."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return
    diffs = differences(read_json(path), cfg.to_dict())
    if not diffs:
        return

    def show(value: object) -> str:
        return "(unset)" if type(value) is object else json.dumps(value)

    named = "; ".join(f"{k} {show(a)} there, {show(b)} now" for k, a, b in diffs[:SHOWN])
    more = f" and {len(diffs) - SHOWN} more" if len(diffs) > SHOWN else ""
    raise ConfigError(
        f"{folder} was made with other settings ({named}{more}); rerun with its settings, use another --out, "
        "or --fresh to discard it and start again"
    )
