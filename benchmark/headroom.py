"""Diversity headroom of EnNAS-family runs: their sets' expected within-set ζ per epoch against what uniform
marginals allow (`ennas.method.headroom`), and the REPORT.md lines that say where diversity-based sampling sits."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.results import Results, _get, _json, _jsonl, _num, _sort
from ennas.method.diversity import load_diversity
from ennas.method.ennas import EnNASOptions
from ennas.method.headroom import KEYS, LOG_KEYS, headroom

FAMILY = ("ennas", "ennas-wo-ds")  # methods that draw sets of m paths (ennas-beta0 is ennas at beta = 0)
DIVERSITY_FILE = re.compile(r"diversity_epoch(\d+)\.json")  # written by EnNAS at every epoch start
COLUMNS = ("label", "space", "seed", "epoch", *KEYS, "reach_independent", "reach_no_repeats", "repeats_share")


@lru_cache(maxsize=4096)
def _from_file(path: str, stamp: tuple[int, int], m: int, beta: float | None) -> tuple[float, ...]:
    """Layer means of `headroom` for one diversity file; cached per (path, mtime and size) for repeated reports."""
    values = headroom(load_diversity(path), m, beta)
    return tuple(float(np.mean(values[k])) for k in KEYS)


def run_headroom(folder: str | Path) -> pd.DataFrame:
    """One row per supernet epoch with a ζ estimate (epoch and KEYS, layer means) of an EnNAS-family run.

    Values come from the epoch's train_log record when it carries all of them (runs since the headroom was
    logged), otherwise they are computed the same way from diversity_epoch{E}.json with the run's ennas.m and
    ennas.beta. ennas-wo-ds runs estimate no ζ, so they give no rows; other methods neither.
    """
    folder = Path(folder)
    cfg = _json(folder / "config.json") or {}
    if cfg.get("method") not in FAMILY:
        return pd.DataFrame(columns=["epoch", *KEYS])
    m, beta = _get(cfg, "ennas.m"), _num(_get(cfg, "ennas.beta"))
    m = int(m) if isinstance(m, int) else EnNASOptions.m  # a config without them ran with the defaults
    beta = None if cfg["method"] == "ennas-wo-ds" else beta if np.isfinite(beta) else EnNASOptions.beta
    logged = {
        r["epoch"]: r
        for r in _jsonl(folder / "train_log.jsonl")
        if r.get("stage") == "supernet" and isinstance(r.get("epoch"), int)
    }
    rows = []
    for path in folder.glob("diversity_epoch*.json"):
        if not (name := DIVERSITY_FILE.fullmatch(path.name)):
            continue
        epoch = int(name[1])
        record = logged.get(epoch, {})
        if all(isinstance(record.get(LOG_KEYS[k]), float) for k in KEYS):
            values = tuple(record[LOG_KEYS[k]] for k in KEYS)
        else:
            stat = path.stat()
            values = _from_file(str(path), (stat.st_mtime_ns, stat.st_size), m, beta)
        rows.append({"epoch": epoch, **dict(zip(KEYS, values, strict=True))})
    return pd.DataFrame(rows, columns=["epoch", *KEYS]).sort_values("epoch", ignore_index=True)


def headroom_table(res: Results) -> pd.DataFrame:
    """run_headroom of every complete run, with label, space, seed and where its sampler sits (COLUMNS).

    reach_X = (sampler − X) / (max − X): the share of the room above reference X that the sampler takes;
    repeats_share = (no_repeats − independent) / (sampler − independent): how much of the sampler's lead over
    independent sets uniform sets without repeats already have (NaN when the sampler is the independent one).
    """
    parts = []
    for run in res.runs[res.runs["status"] == "ok"].itertuples():
        df = run_headroom(res.root / run.folder)
        if len(df):
            parts.append(df.assign(label=run.label, space=run.space, seed=run.seed))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["reach_independent"] = (df["sampler"] - df["independent"]) / (df["max"] - df["independent"])
        df["reach_no_repeats"] = (df["sampler"] - df["no_repeats"]) / (df["max"] - df["no_repeats"])
        lead = df["sampler"] - df["independent"]
        df["repeats_share"] = ((df["no_repeats"] - df["independent"]) / lead).where(lead.abs() > 1e-12)
    return _sort(df[list(COLUMNS)], "epoch")


def _seeds(values: pd.Series, fmt: str) -> str:
    """A mean and its per-seed values: '0.73 (0.70, 0.75, 0.76)'."""
    per_seed = ", ".join(format(v, fmt) for v in values)
    return format(values.mean(), fmt) + (f" ({per_seed})" if len(values) > 1 else "")


def headroom_lines(res: Results) -> list[str]:
    """REPORT.md's diversity-headroom paragraph: per space and EnNAS-family label, where its sampler sits at the
    last supernet epoch between independent sets, sets without repeats and the bounds (mean over seeds, then
    the per-seed values); [] when no run of the family is complete."""
    family = res.runs[(res.runs["status"] == "ok") & res.runs["method"].isin(FAMILY)]
    if family.empty:
        return []
    table = headroom_table(res)
    last = table.sort_values("epoch", kind="stable").drop_duplicates(["label", "space", "seed"], keep="last")
    last = _sort(last)
    lines = [
        "Diversity headroom (expected within-set ζ: the mean ζ over the pairs of a set's m operators at a layer, "
        "averaged over layers; exact, from each run's ζ estimate at its last supernet epoch). A sampler that draws "
        "every operator with chance 1/T reaches at most *max* (the most diverse law over sets of m operators, a "
        "linear programme); one that also never repeats an operator at least *min* (with repeats the lower bound "
        "is 0: one operator m times). References: *independent* (m uniform picks: ennas-wo-ds's sampler) and *no "
        "repeats* (uniform sets without repeats: ennas-beta0's). *reach* = (sampler − reference) / (max − "
        "reference); *no repeats' share* = (no repeats − independent) / (sampler − independent). Means over "
        "seeds, per-seed values in brackets.",
        "",
    ]
    for space, label in family[["space", "label"]].drop_duplicates().itertuples(index=False):
        rows = last[(last["space"] == space) & (last["label"] == label)]
        if rows.empty:
            why = (
                "draws independent sets (reach 0 by construction) and estimates no ζ" if label == "ennas-wo-ds" else ""
            )
            lines.append(f"- **{space} / {label}**: {why or 'no diversity_epoch files'}; no headroom computed.")
            continue
        text = f"- **{space} / {label}** (n={len(rows)}, seeds {', '.join(map(str, rows['seed']))}; "
        text += f"epoch {', '.join(map(str, sorted(set(rows['epoch']))))}): sampler {rows['sampler'].mean():.3f} "
        text += f"in [min {rows['min_no_repeats'].mean():.3f}, max {rows['max'].mean():.3f}]; "
        text += f"independent {rows['independent'].mean():.3f}, no repeats {rows['no_repeats'].mean():.3f}. "
        text += f"Reach from independent {_seeds(rows['reach_independent'], '.2f')}, "
        text += f"from no repeats {_seeds(rows['reach_no_repeats'], '.2f')}"
        if rows["repeats_share"].notna().all():
            text += f"; no repeats' share of the lead over independent sets {_seeds(rows['repeats_share'], '.0%')}"
        lines.append(text + ".")
    return lines
