"""Tables, figures and a claim-by-claim REPORT.md rebuilt from a run folder's result files alone.

    python -m benchmark.report runs/proxy

DIR holds one `<label>-<space>-seed<N>/` folder per run (config.json, train_log.jsonl, final.json, optional
ranking.csv, error.json if it failed) and optionally the harness's plan.json. Written into DIR: table1.csv,
table1.md, teacher_student_gap.csv, fig1_teacher_accuracy.png, fig2_diversity.png, fig3_ranking.png and
ranking.csv (when a run has a ranking.csv) and REPORT.md; the same files in give the same csv/md bytes out. Claims are judged on
95 % t-intervals over seeds (paired per-seed differences where two labels are compared). Bad input ends with
one line `error: ...` and exit status 2.

This module writes the tables and REPORT.md; the run folders are read by `benchmark.results`, the claims judged
by `benchmark.claims` and the figures drawn by `benchmark.figures`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import paper
from benchmark.claims import fmt, judge_all
from benchmark.figures import FIGURES
from benchmark.results import LABELS, NAN, SE_KEYS, ReportError, Results, display_order, load, seed_text


# --- tables --------------------------------------------------------------------------------------------
def _ms(series: pd.Series) -> tuple[float, float]:
    """Mean and sample sd (NaN below two values) of the finite values."""
    x = series.to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    return (float(x.mean()) if len(x) else NAN), (float(x.std(ddof=1)) if len(x) > 1 else NAN)


def table1(res: Results) -> pd.DataFrame:
    """Table 1 per space and label: ours (mean, sd over complete seeds) beside the paper's printed row."""
    rows = []
    for space, label in dict.fromkeys(zip(res.runs["space"], res.runs["label"])):
        g = res.runs[(res.runs["space"] == space) & (res.runs["label"] == label)]
        ok = g[g["status"] == "ok"]
        p = paper.table1_row(space, label)
        sup = sorted({"Y" if s else "N" for s in ok["supervised"] if isinstance(s, bool)})
        cuda = len(ok) > 0 and bool(ok["cuda"].notna().all())
        row = {"space": space, "label": label, "n": len(ok), "seeds": " ".join(map(str, sorted(ok["seed"])))}
        for q in ("top1", "top5", "mflops"):
            row[f"{q}_mean"], row[f"{q}_std"] = _ms(ok[q])
        row |= {"params_m_mean": _ms(ok["params_m"])[0], "supervised": "/".join(sup)}
        row |= {"supernet_device_h": _ms(ok["supernet_device_s"])[0] / 3600}
        row |= {"gpu_days": _ms(ok["supernet_device_s"])[0] / 86400 if cuda else NAN}
        row |= {"paper_top1": p.top1 if p else NAN, "paper_top5": p.top5 if p and p.top5 is not None else NAN}
        row |= {"paper_mflops": p.mflops if p else NAN, "paper_supervised": ("Y" if p.supervised else "N") if p else ""}
        row |= {"paper_gpu_days": p.gpu_days if p else NAN}
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, sd: float, digits: int = 2) -> str:
    """'mean ± sd', 'mean' for one seed, '—' for none."""
    return fmt(mean, digits, False) + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def _md_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]) + "\n"


def table1_md(t: pd.DataFrame) -> str:
    """Table 1 as markdown: ours (mean ± sd, n seeds) then the paper's numbers."""
    header = ["space", "label", "n", "top-1 (%)", "top-5 (%)", "MFLOPs", "params (M)", "sup.", "supernet device-h"]
    header += ["GPU-days", "paper top-1", "paper top-5", "paper MFLOPs", "paper sup.", "paper GPU-days"]
    rows = [
        [r.space, r.label, r.n, _pm(r.top1_mean, r.top1_std), _pm(r.top5_mean, r.top5_std)]
        + [_pm(r.mflops_mean, r.mflops_std), fmt(r.params_m_mean, 3, False), r.supervised or "—"]
        + [fmt(r.supernet_device_h, 3, False), fmt(r.gpu_days, 2, False), fmt(r.paper_top1, 1, False)]
        + [fmt(r.paper_top5, 1, False), fmt(r.paper_mflops, 0, False), r.paper_supervised or "—"]
        + [fmt(r.paper_gpu_days, 0, False)]
        for r in t.itertuples()
    ]
    return _md_table(header, rows)


def gap_table(res: Results) -> pd.DataFrame:
    """Teacher, student, gap (and their probe standard errors when logged) per label, space, seed and epoch."""
    cols = ["label", "space", "seed", "epoch", "teacher_acc", "student_acc", "gap", *SE_KEYS, "diversity"]
    df = res.logs[res.logs["teacher_acc"].notna()][cols + ["probe_sets"]]
    return df.assign(probe_sets=df["probe_sets"].round().astype("Int64")).reset_index(drop=True)


def ranking_table(res: Results) -> pd.DataFrame:
    """Every complete run's ranking.csv rows in one tidy table (in the report's order), keyed by label, space and
    seed first, so τ per method and epoch (and the FLOPs and ceiling references) can be compared without opening
    each run folder."""
    keys = ["label", "space", "seed"]
    return res.ranking[keys + [c for c in res.ranking.columns if c not in keys]]


def _csv(df: pd.DataFrame, path: Path) -> None:
    """Fixed float format, '\\n' line ends, empty cells for NaN: the same table gives the same bytes."""
    df.to_csv(path, index=False, float_format="%.4f", lineterminator="\n")


# --- REPORT.md -----------------------------------------------------------------------------------------
def _header(res: Results) -> list[str]:
    """Preset, spaces, seeds, labels and run counts, then failed and missing runs with their reason."""
    runs = res.runs
    counts = runs["status"].value_counts()
    ok = runs[runs["status"] == "ok"]
    unique = lambda col: ", ".join(sorted({str(v) for v in ok[col] if str(v) not in ("", "nan")})) or "—"  # noqa: E731
    epochs = ", ".join(sorted({f"{v:g}" for v in ok["epochs"] if math.isfinite(v)})) or "—"
    labels = sorted(set(runs["label"]), key=display_order(runs["label"], LABELS).get)
    lines = [
        f"- run folder: `{res.root.resolve().name}`; preset: {res.preset}; scale: {unique('scale')}; "
        f"dataset: {unique('dataset')}; supernet epochs: {epochs}",
        f"- spaces: {', '.join(res.spaces)}",
        f"- seeds: {seed_text(runs)}",
        f"- labels: {', '.join(labels)}",
        "- runs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "failed", "missing", "incomplete")),
    ]
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        lines += ["", "| run folder | label | space | seed | status | reason |", "|---|---|---|---|---|---|"]
        reasons = {"missing": "planned; no final.json or error.json", "incomplete": "no final.json or error.json"}
        for r in bad.itertuples():
            lines.append(
                f"| `{r.folder}` | {r.label} | {r.space} | {r.seed} | {r.status} | {r.error or reasons[r.status]} |"
            )
    return lines


def _claim_sections(claims: list[dict], group: str) -> list[str]:
    """A summary table, then one section per claim with its text, the paper's figure and each space's message."""
    rows = [c for c in claims if c["group"] == group]
    lines = [
        _md_table(
            ["id", "space", "paper", "ours", "n", "verdict", "95 % interval"],
            [
                [c["id"], c["space"], "—" if c["paper"] is None else fmt(c["paper"], c["digits"], c["signed"])]
                + [fmt(c["ours_mean"], c["digits"], c["signed"]), c["n"], f"**{c['verdict']}**"]
                + [
                    "—"
                    if c["n"] < 2
                    else f"[{fmt(c['low'], c['digits'], c['signed'])}, {fmt(c['high'], c['digits'], c['signed'])}]"
                ]
                for c in rows
            ],
        )
    ]
    for cid in dict.fromkeys(c["id"] for c in rows):
        first = next(c for c in rows if c["id"] == cid)
        paper_fig = "no figure given" if first["paper"] is None else f"{first['paper']:g}"
        lines += [f"### {cid}: {first['text']}", "", f"Paper ({first['source']}): {paper_fig}.", ""]
        lines += [f"- **{c['space']}**: {c['message']}" for c in rows if c["id"] == cid] + [""]
    return lines


def _control(claims: list[dict]) -> list[str]:
    """Where the beta = 0 control sits between random sets and ζ-based ones, per space."""
    none = {"verdict": "inconclusive", "ours_mean": NAN}
    by = {(c["id"], c["space"]): c for c in claims}
    lines = []
    for space in dict.fromkeys(c["space"] for c in claims if c["id"] in ("control_repeats", "control_zeta")):
        rep, zeta = by.get(("control_repeats", space), none), by.get(("control_zeta", space), none)
        vs = {rep["verdict"], zeta["verdict"]}
        place = "between them" if vs == {"held"} else "not between them" if "not held" in vs else "undecided"
        lines.append(
            f"- **{space}**: ennas-beta0 is {place}: no repeats adds {fmt(rep['ours_mean'], 3)} ({rep['verdict']}), "
            f"ζ-based sampling {fmt(zeta['ours_mean'], 3)} ({zeta['verdict']}) to the mean logit distance"
        )
    return lines


def _costs(res: Results) -> str:
    """Device-hours per label and space (mean over complete seeds), GPU-days where the runs used CUDA."""
    rows = []
    for space, label in dict.fromkeys(zip(res.runs["space"], res.runs["label"])):
        ok = res.runs[(res.runs["space"] == space) & (res.runs["label"] == label) & (res.runs["status"] == "ok")]
        if len(ok):
            h = {k: _ms(ok[k])[0] / 3600 for k in ("supernet_device_s", "probe_device_s", "search_device_s")}
            h["retrain_device_s"] = _ms(ok["retrain_device_s"])[0] / 3600
            cuda = bool(ok["cuda"].notna().all())
            rows.append([space, label, len(ok)] + [fmt(v, 3, False) for v in h.values()])
            rows[-1].append(fmt(h["supernet_device_s"] / 24, 2, False) if cuda else "— (no CUDA)")
    header = ["space", "label", "n", "supernet device-h", "of which probes/ζ", "search device-h", "retrain device-h"]
    return _md_table(header + ["supernet GPU-days"], rows)


def report_md(res: Results, table_md: str, claims: list[dict], figures: dict[str, str | None]) -> str:
    """REPORT.md: header, Table 1, claim by claim, qualitative checks, costs, figures."""
    lines = ["# ennas-bench report", "", *_header(res), "", "## Table 1", "", table_md]
    lines += [
        "## Claims",
        "",
        "Ours: the mean over seeds and its 95 % t-interval; where two labels are compared, of the paired "
        "per-seed differences on matching seeds. Teacher, student and diversity values are those of the last "
        "supernet epoch. *held*: the interval lies on the claimed side of the threshold; *not held*: entirely "
        "on the other side; *inconclusive*: it straddles the threshold, or there are fewer than 2 (paired) seeds.",
        "",
        *_claim_sections(claims, "claim"),
        "## Qualitative checks",
        "",
        *_claim_sections(claims, "check"),
        "Control placement (ennas-wo-ds < ennas-beta0 < ennas separates 'no repeats' from ζ-based diversity):",
        "",
        *_control(claims),
        "",
        "## Cost",
        "",
        _costs(res),
        "## Figures",
        "",
    ]
    lines += [f"- `{name}`: " + (f"skipped: {why}" if why else "written") for name, why in figures.items()]
    return "\n".join(lines) + "\n"


# --- entry points --------------------------------------------------------------------------------------
def build_report(run_dir: str | Path) -> dict:
    """Write every table, figure and REPORT.md into `run_dir`; returns {paths, skipped, claims, verdicts}."""
    res = load(run_dir)
    root = res.root
    t1 = table1(res)
    _csv(t1, root / "table1.csv")
    table_md = table1_md(t1)
    (root / "table1.md").write_text(table_md)
    _csv(gap_table(res), root / "teacher_student_gap.csv")
    figures = {}
    for name, draw in FIGURES.items():
        figures[name] = draw(res, root / name)
        if figures[name]:
            (root / name).unlink(missing_ok=True)  # no stale figure beside a report that says it was skipped
    figures["ranking.csv"] = figures["fig3_ranking.png"]  # written exactly when fig3 can be drawn
    if figures["ranking.csv"]:
        (root / "ranking.csv").unlink(missing_ok=True)
    else:
        _csv(ranking_table(res), root / "ranking.csv")
    claims = judge_all(res)
    (root / "REPORT.md").write_text(report_md(res, table_md, claims, figures))
    names = ["table1.csv", "table1.md", "teacher_student_gap.csv", *(n for n, why in figures.items() if not why)]
    return {
        "paths": {n: root / n for n in [*names, "REPORT.md"]},
        "skipped": {n: why for n, why in figures.items() if why},
        "claims": claims,
        "verdicts": {f"{c['id']}@{c['space']}": c["verdict"] for c in claims},
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmark.report DIR`: bad input becomes one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="folder of <label>-<space>-seed<N> run folders (and plan.json)")
    args = p.parse_args(argv)
    try:
        out = build_report(args.dir)
    except (ReportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verdicts = pd.Series([c["verdict"] for c in out["claims"] if c["group"] == "claim"]).value_counts()
    print(
        f"wrote {', '.join(out['paths'])} in {args.dir}; claims: " + ", ".join(f"{n} {v}" for v, n in verdicts.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
