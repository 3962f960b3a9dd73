"""Reading a run folder: each `<label>-<space>-seed<N>/` run and plan.json into tidy tables (`Results`)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

FOLDER = re.compile(r"(?P<label>.+)-(?P<space>[a-z0-9]+)-seed(?P<seed>\d+)")  # spaces have no dashes
LABELS = ("spos", "cream", "dna", "ennas-wo-ds", "ennas", "ennas-beta0")  # display order; others follow
SPACES = ("s1", "s2", "s3", "spos", "cream")
SE_KEYS = ("teacher_acc_se", "student_acc_se", "gap_se")
LOG_KEYS = ("teacher_acc", "student_acc", "gap", "diversity", *SE_KEYS, "probe_sets", "probe_device_s")
NUMERIC = ("beta", "epochs", "top1", "top5", "mflops", "params_m", "supernet_device_s", "probe_device_s")
NUMERIC += ("supernet_train_s", "search_device_s", "retrain_device_s", "epoch_start_device_s", "teacher_device_s")
RUN_COLUMNS = ("label", "space", "seed", "folder", "status", "error", "method", "scale", "dataset", "cuda")
RUN_COLUMNS += ("supervised", "smoke", *NUMERIC)
NAN = math.nan
# Read as a file, not through benchmark.preset: that module's imports reach torch, which a report never needs.
SMOKE_PRESET = Path(__file__).resolve().parent / "presets" / "smoke.json"


class ReportError(ValueError):
    """Bad input (no such folder, no runs, an unreadable plan.json), reported in one line."""


@dataclass
class Results:
    """Everything the report reads from one run folder, as tidy tables."""

    root: Path
    preset: str
    runs: pd.DataFrame  # one row per run (RUN_COLUMNS), sorted by space, label, seed
    logs: pd.DataFrame  # supernet-stage epoch records of complete runs (label, space, seed, epoch, LOG_KEYS)
    ranking: pd.DataFrame  # ranking.csv rows of complete runs, with label, space, seed, in the runs' order

    def final(self, folder: str) -> dict:
        """A run's whole final.json (the tables keep only some of its fields; extras and retraining seeds live here)."""
        return _json(self.root / folder / "final.json") or {}

    @property
    def spaces(self) -> list[str]:
        """Spaces with any run, in display order."""
        return list(dict.fromkeys(self.runs["space"]))

    @property
    def smoke(self) -> bool:
        """Whether these are smoke-preset runs (a pipeline check): by plan.json, or by any run's config."""
        return self.preset == "smoke" or bool(self.runs["smoke"].eq(True).any())

    @cached_property
    def last(self) -> pd.DataFrame:
        """Each run's last supernet-epoch record."""
        return self.logs.sort_values("epoch", kind="stable").drop_duplicates(["label", "space", "seed"], keep="last")


# --- reading -------------------------------------------------------------------------------------------
def _json(path: Path) -> dict | None:
    """A JSON object from `path`; None when absent, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; blank or unreadable lines (a crash mid-write) are skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _get(cfg: dict, dotted: str):
    """A config value by dotted key, nested (`{"ennas": {"beta": 0}}`) or flat (`{"ennas.beta": 0}`)."""
    if dotted in cfg:
        return cfg[dotted]
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _carries(cfg: dict, preset: dict) -> bool:
    """Whether `cfg` holds every (nested) value `preset` sets, i.e. the run was made with that preset."""
    for key, value in preset.items():
        if isinstance(value, dict):
            if not (isinstance(cfg.get(key), dict) and _carries(cfg[key], value)):
                return False
        elif cfg.get(key) != value:
            return False
    return True


def _num(value) -> float:
    """A float; NaN for None or anything non-numeric."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def display_order(values, preferred: Sequence[str]) -> dict:
    """Rank of each distinct value: the preferred ones in their order, then the rest alphabetically."""
    key = lambda v: (preferred.index(v) if v in preferred else len(preferred), str(v))  # noqa: E731
    return {v: i for i, v in enumerate(sorted(set(values), key=key))}


def seed_text(df: pd.DataFrame) -> str:
    """Seeds present, as text."""
    return ", ".join(map(str, sorted(set(df["seed"])))) or "none"


def _sort(df: pd.DataFrame, *extra: str) -> pd.DataFrame:
    """Rows ordered by space, label (display orders), seed and any extra columns."""
    if df.empty:
        return df.reset_index(drop=True)
    keyed = df.assign(
        _s=df["space"].map(display_order(df["space"], SPACES)), _l=df["label"].map(display_order(df["label"], LABELS))
    )
    return (
        keyed.sort_values(["_s", "_l", "seed", *extra], kind="stable").drop(columns=["_s", "_l"]).reset_index(drop=True)
    )


def read_run(folder: Path, label: str, space: str, seed: int) -> tuple[dict, list[dict]]:
    """One run's row (status, final.json fields, costs) and its supernet-stage log records."""
    cfg = _json(folder / "config.json") or {}
    env = cfg.get("environment") if isinstance(cfg.get("environment"), dict) else {}
    row = {"label": label, "space": space, "seed": seed, "folder": folder.name, "status": "incomplete", "error": ""}
    row |= {"method": cfg.get("method") or "", "scale": cfg.get("scale") or "", "cuda": env.get("cuda")}
    row |= {"dataset": _get(cfg, "data.dataset") or "", "beta": _num(_get(cfg, "ennas.beta"))}
    row |= {"epochs": _num(_get(cfg, "supernet.epochs")), "supervised": None}
    smoke = _json(SMOKE_PRESET)
    row["smoke"] = bool(cfg and smoke) and _carries(cfg, smoke)
    if (folder / "final.json").is_file():
        final = _json(folder / "final.json")
        if final is None:
            row.update(status="failed", error="final.json is unreadable")
        else:
            mflops = _num(final.get("mflops"))
            row |= {"status": "ok", "method": row["method"] or final.get("method") or ""}
            row |= {"top1": _num(final.get("top1")), "top5": _num(final.get("top5"))}
            row |= {"supervised": final.get("supervised")}
            row |= {"mflops": mflops if math.isfinite(mflops) else _num(final.get("flops")) / 1e6}
            row |= {"params_m": _num(final.get("params")) / 1e6, "scale": row["scale"] or final.get("scale") or ""}
            row |= {k: _num(final.get(k)) for k in ("supernet_device_s", "search_device_s", "retrain_device_s")}
    elif (folder / "error.json").is_file():
        error = str((_json(folder / "error.json") or {}).get("error") or "error.json is unreadable")
        row.update(status="failed", error=(error.strip().splitlines() or ["(empty error)"])[0])
    # A resumed stage rewrites its epochs: keep one record per (stage, epoch), the latest.
    records = list({(r.get("stage"), r.get("epoch")): r for r in _jsonl(folder / "train_log.jsonl")}.values())
    # supernet, DNA's teacher and blocks: every stage but the retraining seeds (retrain, retrain1, ...)
    trained = [r for r in records if not str(r.get("stage")).startswith("retrain")]
    if not math.isfinite(row.get("supernet_device_s", NAN)) and trained:
        row["supernet_device_s"] = float(np.nansum([_num(r.get("device_s")) for r in trained]))
    row |= stage_costs(trained)
    # The method's search cost: the supernet stage less the measurement probes (instrumentation for the figures)
    # and less DNA's teacher, which the paper's DNA loads pretrained. EnNAS's ζ estimate stays in: it is part of
    # the method (runs logged before the split count it among the probes; see epoch_start_device_s).
    row["supernet_train_s"] = (
        row.get("supernet_device_s", NAN) - np.nan_to_num(row["probe_device_s"]) - row["teacher_device_s"]
    )
    key = {"label": label, "space": space, "seed": seed}
    supernet = [r for r in records if r.get("stage") == "supernet" and isinstance(r.get("epoch"), int)]
    logs = [{**key, "epoch": r["epoch"], **{k: _num(r.get(k)) for k in LOG_KEYS}} for r in supernet]
    return row, logs


def stage_costs(trained: list[dict]) -> dict:
    """Device seconds of a run's non-retraining epochs by kind: the probes outside DNA's teacher, the policy's epoch
    start (NaN when the log predates its own field, which then sits inside the probes), DNA's teacher training."""
    if not trained:
        return {"probe_device_s": NAN, "epoch_start_device_s": NAN, "teacher_device_s": 0.0}
    teacher = [r for r in trained if r.get("stage") == "teacher"]
    others = [r for r in trained if r.get("stage") != "teacher"]
    starts = [_num(r.get("epoch_start_device_s")) for r in others if "epoch_start_device_s" in r]
    return {
        "probe_device_s": float(np.nansum([_num(r.get("probe_device_s")) for r in others])),
        "epoch_start_device_s": float(np.nansum(starts)) if starts else NAN,
        "teacher_device_s": float(np.nansum([_num(r.get("device_s")) for r in teacher])),
    }


def _ranking(folder: Path, label: str, space: str, seed: int) -> pd.DataFrame | None:
    """A run's ranking.csv with its label, space and seed; None when absent or unreadable."""
    try:
        df = pd.read_csv(folder / "ranking.csv")
    except (OSError, ValueError):
        return None
    return df.assign(label=label, space=space, seed=seed)


def load(run_dir: str | Path) -> Results:
    """Read every run folder and plan.json under `run_dir` (planned runs with no result are 'missing')."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportError(f"{run_dir} is not a folder")
    plan = None
    if (root / "plan.json").exists():
        plan = _json(root / "plan.json")
        if plan is None or not isinstance(plan.get("runs", []), list):
            raise ReportError(f"{root / 'plan.json'} is unreadable or its 'runs' is not a list")
    try:
        planned = {(r.get("label") or r["method"], r["space"], int(r["seed"])) for r in (plan or {}).get("runs", [])}
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ReportError(
            f"{root / 'plan.json'}: each run needs label or method, space and an integer seed ({err!r})"
        ) from None
    rows, logs, ranks = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (m := FOLDER.fullmatch(folder.name)):
            continue  # e.g. groundtruth/
        key = (m["label"], m["space"], int(m["seed"]))
        row, records = read_run(folder, *key)
        if row["status"] == "incomplete" and key in planned:
            row["status"] = "missing"
        rows.append(row)
        if row["status"] == "ok":
            logs += records
            ranks.append(_ranking(folder, *key))
    found = {(r["label"], r["space"], r["seed"]) for r in rows}
    for label, space, seed in sorted(planned - found, key=str):
        rows.append({"label": label, "space": space, "seed": seed, "folder": f"{label}-{space}-seed{seed}"})
        rows[-1] |= {"status": "missing", "error": ""}
    if not rows:
        raise ReportError(f"no runs in {run_dir}: no <label>-<space>-seed<N> folders and no plan.json runs")
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    runs[list(NUMERIC)] = runs[list(NUMERIC)].apply(pd.to_numeric, errors="coerce").astype(float)
    ranking = _sort(pd.concat([r for r in ranks if r is not None] or [pd.DataFrame()], ignore_index=True))
    return Results(
        root=root,
        preset=str((plan or {}).get("preset") or "unrecorded"),
        runs=_sort(runs),
        logs=_sort(pd.DataFrame(logs, columns=["label", "space", "seed", "epoch", *LOG_KEYS]), "epoch"),
        ranking=ranking,
    )


def collect_runs(run_dir: str | Path) -> pd.DataFrame:
    """One row per run (label, space, seed, folder, status ok/failed/missing/incomplete, error, final.json fields)."""
    return load(run_dir).runs
