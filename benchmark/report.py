"""Tables, figures and a claim-by-claim REPORT.md rebuilt from a run folder's result files alone.

    python -m benchmark.report runs/proxy

DIR holds one `<label>-<space>-seed<N>/` folder per run (config.json, train_log.jsonl, final.json, optional
ranking.csv, error.json if it failed) and optionally the harness's plan.json. Written into DIR: table1.csv,
table1.md, teacher_student_gap.csv, fig1_teacher_accuracy.png, fig2_diversity.png, fig3_ranking.png and
ranking.csv (when a run has a ranking.csv) and REPORT.md; the same files in give the same csv/md bytes out. Bad
input ends with one line `error: ...` and exit status 2.

This module writes the tables and REPORT.md (its sections: SECTIONS); the run folders are read by
`benchmark.results`, the claims judged by `benchmark.claims` (verdicts: `benchmark.verdicts`, sizing:
`benchmark.power`) and the figures drawn by `benchmark.figures`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark import paper
from benchmark.answer import answer_md
from benchmark.claims import fmt, judge_all, last_ranking
from benchmark.costs import cost_table, perf_lines, teacher_lines
from benchmark.figures import FIGURES
from benchmark.headroom import headroom_lines
from benchmark.power import power_md
from benchmark.results import LABELS, NAN, SE_KEYS, ReportError, Results, display_order, load, seed_text
from benchmark.tables import md_table, mean_sd
from benchmark.variance import analyse_results, variance_lines
from benchmark.verdicts import HELD, SCHEME, from_values

# --- tables --------------------------------------------------------------------------------------------


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
            row[f"{q}_mean"], row[f"{q}_std"] = mean_sd(ok[q])
        row |= {"params_m_mean": mean_sd(ok["params_m"])[0], "supervised": "/".join(sup)}
        # the method's supernet cost: less the probes and DNA's teacher, which stand in their own columns
        row |= {"supernet_device_h": mean_sd(ok["supernet_train_s"])[0] / 3600}
        row |= {"probe_device_h": mean_sd(ok["probe_device_s"])[0] / 3600}
        row |= {"teacher_device_h": mean_sd(ok["teacher_device_s"])[0] / 3600}
        row |= {"gpu_days": mean_sd(ok["supernet_train_s"])[0] / 86400 if cuda else NAN}
        row |= {"paper_top1": p.top1 if p else NAN, "paper_top5": p.top5 if p and p.top5 is not None else NAN}
        row |= {"paper_mflops": p.mflops if p else NAN, "paper_supervised": ("Y" if p.supervised else "N") if p else ""}
        row |= {"paper_gpu_days": p.gpu_days if p else NAN}
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, sd: float, digits: int = 2) -> str:
    """'mean ± sd', 'mean' for one seed, '—' for none."""
    return fmt(mean, digits, False) + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def table1_md(t: pd.DataFrame) -> str:
    """Table 1 as markdown: ours (mean ± sd, n seeds) then the paper's numbers."""
    header = ["space", "label", "n", "top-1 (%)", "top-5 (%)", "MFLOPs", "params (M)", "sup.", "supernet device-h"]
    header += ["probes device-h", "DNA teacher device-h", "GPU-days", "paper top-1", "paper top-5", "paper MFLOPs"]
    header += ["paper sup.", "paper GPU-days"]
    rows = [
        [r.space, r.label, r.n, _pm(r.top1_mean, r.top1_std), _pm(r.top5_mean, r.top5_std)]
        + [_pm(r.mflops_mean, r.mflops_std), fmt(r.params_m_mean, 3, False), r.supervised or "—"]
        + [fmt(r.supernet_device_h, 3, False), fmt(r.probe_device_h, 3, False), fmt(r.teacher_device_h, 3, False)]
        + [fmt(r.gpu_days, 2, False) if math.isfinite(r.gpu_days) else "— (CPU runs)", fmt(r.paper_top1, 1, False)]
        + [fmt(r.paper_top5, 1, False), fmt(r.paper_mflops, 0, False), r.paper_supervised or "—"]
        + [fmt(r.paper_gpu_days, 0, False)]
        for r in t.itertuples()
    ]
    return md_table(header, rows)


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


def _banner(res: Results) -> list[str]:
    """A smoke-preset report says first that it checks the pipeline and says nothing about the paper."""
    if not res.smoke:
        return []
    return [
        "> **Pipeline check, not a result.** These runs are of the smoke preset (a few steps on a few hundred "
        "images): every number and verdict below only shows that the pipeline runs end to end.",
        "",
    ]


def _claim_table(rows: list[dict]) -> str:
    """One line per claim and space: P, P scaled, Δ, ours with its 95 % interval, n, verdict, MDE, n for Δ."""
    header = ["id", "space", "paper P", "P scaled", "Δ", "ours", "95 % interval", "n", "verdict", "MDE", "n for Δ"]
    return md_table(
        header,
        [
            [c["id"], c["space"], c["shown"]["paper"], c["shown"]["scaled"], c["shown"]["delta"], c["shown"]["mean"]]
            + [c["shown"]["interval"], c["n"], f"**{c['verdict_label']}**", c["shown"]["mde"], c["n_needed"] or "—"]
            for c in rows
        ],
    )


def _claim_sections(claims: list[dict], group: str) -> list[str]:
    """A summary table, then one section per claim with its text, P, P scaled, Δ and each space's message."""
    rows = [c for c in claims if c["group"] == group]
    lines = [_claim_table(rows)]
    by_id = {c.id: c for c in (*paper.CLAIMS, *paper.CHECKS, *paper.RANKING)}
    for cid in dict.fromkeys(c["id"] for c in rows):
        first, c = next(r for r in rows if r["id"] == cid), by_id[cid]
        fig = "no figure given (Δ stands in for it)" if c.paper is None else f"P = {first['shown']['paper']}"
        note = paper.scaling_note(c)
        fig += f"; scaled to our data: {note}" if note else ""
        lines += [f"### {cid}: {first['text']}", "", f"Paper ({first['source']}): {fig}."]
        lines += [f"Δ = {first['shown']['delta']} ({c.effect.why}).", ""]
        lines += [f"- **{r['space']}**: {r['message']}" for r in rows if r["id"] == cid] + [""]
    return lines


def _control(claims: list[dict]) -> list[str]:
    """Where the beta = 0 control sits between random sets and ζ-based ones, per space."""
    none = {"verdict": "too-few-seeds", "ours_mean": NAN}
    by = {(c["id"], c["space"]): c for c in claims}
    lines = []
    for space in dict.fromkeys(c["space"] for c in claims if c["id"] in ("control_repeats", "control_zeta")):
        rep, zeta = by.get(("control_repeats", space), none), by.get(("control_zeta", space), none)
        vs = {rep["verdict"], zeta["verdict"]}
        place = "between them" if vs <= set(HELD) else "not between them" if "contradicted" in vs else "undecided"
        lines.append(
            f"- **{space}**: ennas-beta0 is {place}: no repeats adds {fmt(rep['ours_mean'], 3)} ({rep['verdict']}), "
            f"ζ-based sampling {fmt(zeta['ours_mean'], 3)} ({zeta['verdict']}) to the mean logit distance"
        )
    return lines


def _span(low: float, high: float, signed: bool = True) -> str:
    """'[low, high]' to 3 decimals, '—' where undefined."""
    return f"[{fmt(low, 3, signed)}, {fmt(high, 3, signed)}]" if math.isfinite(low) else "—"


def _ranking_md(res: Results, claims: list[dict]) -> list[str]:
    """τ per method, the ceilings, the ranking claims and each run's supernet against FLOPs."""
    last = last_ranking(res)
    if last.empty:
        return ["No run has a ranking.csv: no ranking fidelity to judge.", ""]
    optional = ["predictor", "tau_low", "tau_high", "ceiling_mean_tau", "ceiling_mean_low", "ceiling_mean_high"]
    rk = res.ranking.reindex(columns=list(dict.fromkeys([*res.ranking.columns, *optional, "seed_reliability"])))
    rows = []
    for (space, label), g in last.groupby(["space", "label"], sort=False):
        e, per = from_values(g["kendall_tau"].tolist()), ", ".join(f"{t:.3f}" for t in g["kendall_tau"])
        rows.append([space, label, e.n, fmt(e.mean, 3), _span(e.low, e.high), per])
    for r in rk[rk["predictor"].isin(["flops", "params"])].drop_duplicates(["space", "predictor"]).itertuples():
        rows.append([r.space, f"*{r.predictor} alone*", "—", fmt(r.kendall_tau, 3), _span(r.tau_low, r.tau_high), ""])
    lines = [
        "Kendall τ of each method's supernet against the ground truth's per-architecture means, at each run's last "
        "ranked epoch: the mean over seeds with its 95 % t-interval; FLOPs and params alone with their bootstrap "
        "intervals over architectures.",
        "",
        md_table(["space", "ranker", "n", "τ", "95 % interval", "per seed"], rows),
    ]
    for r in rk[rk["predictor"] == "ceiling"].drop_duplicates("space").itertuples():
        ceiling = f"{fmt(r.ceiling_mean_tau, 3, False)} {_span(r.ceiling_mean_low, r.ceiling_mean_high, False)}"
        lines.append(
            f"- **{r.space}** ceiling (as rankers are scored): a noise-free ranker reaches τ {ceiling} against the "
            f"{r.gt_seeds:g}-seed ground-truth mean (one seed's reliability {r.seed_reliability:.2f}, from the "
            "ground truth's variance components; τ = (2/π)·arcsin √R)"
            if math.isfinite(r.ceiling_mean_tau)
            else f"- **{r.space}** ceiling against the ground-truth mean: not in ranking.csv (written before it)"
        )
        lines.append(
            f"- **{r.space}** τ between two single ground-truth seeds (the old ceiling, a noisier comparison than the "
            f"rankers face): {fmt(r.kendall_tau, 3, False)} {_span(r.tau_low, r.tau_high, False)}"
        )
    lines += ["", "### Ranking claims (τ differences, paired by seed)", "", *_claim_sections(claims, "ranking")]
    lines += ["### Supernet against FLOPs alone, per run", ""]
    flops = [c for c in claims if c["group"] == "flops"]
    if not flops:
        return lines + [
            "The runs' ranking.csv files predate the paired bootstrap of τ(supernet) − τ(FLOPs); rewrite them from "
            "the memoised scores: `python -m benchmark.fidelity RUN... --groundtruth CSV --from-scores`.",
            "",
        ]
    lines += [
        "τ(supernet) − τ(FLOPs) against the same ground truth at the last ranked epoch, with its paired BCa bootstrap "
        f"interval over architectures; Δ = {paper.TAU.delta:.2f} ({paper.TAU.why}), no paper figure.",
        "",
    ]
    header = ["space", "label", "seed", "epoch", "τ", "τ − τ(FLOPs)", "95 % BCa", "archs", "verdict", "MDE"]
    header += ["archs for Δ"]
    table = [
        [c["space"], c["label"], c["seed"], c["epoch"], fmt(c["tau"], 3), fmt(c["ours_mean"], 3)]
        + [_span(c["low"], c["high"]), c["n"], f"**{c['verdict_label']}**", fmt(c["mde"], 3, False)]
        + [c["n_needed"] or "—"]
        for c in flops
    ]
    return lines + [md_table(header, table)]


@dataclass(frozen=True)
class Inputs:
    """What every REPORT.md section reads."""

    res: Results
    table_md: str
    claims: list[dict]
    figures: dict[str, str | None]


def _s_answer(x: Inputs) -> list[str]:
    table = answer_md(x.claims)
    if not table:
        return []
    intro = "Each claim in a line (also `answer.md`); the sections below give every interval, Δ and reason."
    return ["## The answer", "", intro, "", table]


def _s_table1(x: Inputs) -> list[str]:
    return ["## Table 1", "", x.table_md]


def _s_claims(x: Inputs) -> list[str]:
    intro = (
        "Ours: the mean over seeds with its 95 % t-interval; where two labels are compared, of the paired per-seed "
        "differences on matching seeds (ratios: of the paired log-ratios, shown back as ratios). Teacher, student "
        "and diversity values are those of the last supernet epoch. P: the paper's figure; P scaled: the same "
        "relative error reduction on our data (top-1 claims; P elsewhere); Δ: the smallest effect of interest, "
        "fixed in advance (benchmark/paper.py). " + SCHEME
    )
    return ["## Claims", "", intro, "", *_claim_sections(x.claims, "claim")]


def _s_checks(x: Inputs) -> list[str]:
    lines = ["## Qualitative checks", "", *_claim_sections(x.claims, "check")]
    head = "Control placement (ennas-wo-ds < ennas-beta0 < ennas separates 'no repeats' from ζ-based diversity):"
    return lines + [head, "", *_control(x.claims), ""]


def _s_ranking(x: Inputs) -> list[str]:
    return ["## Ranking", "", *_ranking_md(x.res, x.claims)]


def _s_power(x: Inputs) -> list[str]:
    rows = [c for c in x.claims if c["group"] in ("claim", "check", "ranking")]
    intro = (
        "From the observed paired sd: two-sided paired t test (TOST for the equivalence claim, sd and Δ as "
        "log-ratios; the largest gain: one run's sd, simulated against its permutation null), α 0.05, power 0.8; "
        "size a study with `python -m benchmark.power DIR --n N ...`."
    )
    return ["## Power", "", intro, "", power_md(rows)]


def _s_cost(x: Inputs) -> list[str]:
    lines = ["## Cost", "", cost_table(x.res), *teacher_lines(x.res), *perf_lines(x.res)]
    runs = [c for c in x.claims if c["group"] == "cost-coscheduled"]
    if runs:
        lines += ["The reference runs' own times (two runs at a time, not the claim's measurement):", ""]
        lines += [f"- **{c['space']}**: {c['message']}" for c in runs] + [""]
    return lines


def _s_headroom(x: Inputs) -> list[str]:
    lines = headroom_lines(x.res)
    return ["## Diversity headroom", "", *lines, ""] if lines else []


def _s_variance(x: Inputs) -> list[str]:
    return variance_lines(analyse_results(x.res))


FIGURE_TITLES = {
    "fig1_teacher_accuracy.png": "Fig. 1: teacher and student top-1 over supernet training",
    "fig2_diversity.png": "Fig. 2: diversity of the sampled sets, and the room the sampler had",
    "fig3_ranking.png": "Fig. 3: ranking fidelity (Kendall τ against the ground truth) over supernet training",
}


def _s_figures(x: Inputs) -> list[str]:
    """Each figure shown inline (beside REPORT.md) under its title, or why it was skipped."""
    lines = ["## Figures", ""]
    for name, why in x.figures.items():
        title = FIGURE_TITLES.get(name)
        if title is None:  # a data file written with the figures (ranking.csv)
            lines += [f"- `{name}`: " + (f"skipped: {why}" if why else "written beside this report"), ""]
        else:
            lines += [f"### {title}", "", f"skipped: {why}" if why else f"![{title}]({name})", ""]
    return lines


# REPORT.md's sections in order: each takes the Inputs and gives its lines (title first).
SECTIONS = (
    _s_answer,
    _s_table1,
    _s_claims,
    _s_checks,
    _s_headroom,
    _s_ranking,
    _s_variance,
    _s_power,
    _s_cost,
    _s_figures,
)


def report_md(res: Results, table_md: str, claims: list[dict], figures: dict[str, str | None]) -> str:
    """REPORT.md: a smoke banner where due, the header, then each of SECTIONS."""
    x = Inputs(res, table_md, claims, figures)
    lines = ["# ennas-bench report", "", *_banner(res), *_header(res), ""]
    for section in SECTIONS:
        lines += section(x)
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
    (root / "answer.md").write_text(answer_md(claims))
    (root / "REPORT.md").write_text(report_md(res, table_md, claims, figures))
    names = ["table1.csv", "table1.md", "teacher_student_gap.csv", "answer.md"]
    names += [n for n, why in figures.items() if not why]
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
