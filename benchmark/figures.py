"""Figures 1-3 drawn from the tidy tables: teacher/student top-1, subnet diversity (and its ζ headroom) and ranking
fidelity per epoch."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from benchmark.headroom import headroom_table
from benchmark.results import LABELS, Results, display_order, seed_text
from ennas.method.headroom import KEYS

COLORS = {"spos": "tab:gray", "cream": "tab:orange", "dna": "tab:purple", "ennas-wo-ds": "tab:blue"}
COLORS |= {"ennas": "tab:red", "ennas-beta0": "tab:green"}
FIG1_LABELS = ("ennas", "ennas-wo-ds", "cream")
FIG2_LABELS = ("ennas", "ennas-wo-ds", "ennas-beta0")


def _figure(n: int) -> tuple[Figure, list]:
    """A figure with one panel per space, side by side."""
    fig = Figure(figsize=(5.6 * n, 4.6), layout="constrained")
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def common_epochs(df: pd.DataFrame, y: str) -> pd.DataFrame:
    """The rows with `y` at the epochs every seed of `df` measured it at. Runs probed on other schedules
    (`distill.probe_every`: the reference seeds 0-2 every epoch, later seeds every third and the last) would
    otherwise give a mean over a changing set of seeds, which jumps where the schedules meet."""
    d = df.dropna(subset=[y])
    seeds_at = d.groupby("epoch")["seed"].nunique()
    return d[d["epoch"].isin(seeds_at.index[seeds_at == d["seed"].nunique()])]


def _band(
    ax, df: pd.DataFrame, y: str, color: str, style: str, label: str, low: str = "", high: str = "", marker: str = "."
) -> None:
    """Mean over seeds per epoch as a line; min–max over seeds shaded (one seed: its `low`–`high` columns)."""
    g = common_epochs(df, y).groupby("epoch")
    mean = g[y].mean()
    if mean.empty:
        return
    if len(mean) == 1:  # one epoch measured (Cream's first KD epoch in a short run): a visible point, not a speck
        marker = "o" if style == "-" else "s"
    ax.plot(mean.index, mean.to_numpy(), linestyle=style, color=color, label=label, marker=marker)
    if df["seed"].nunique() > 1:
        ax.fill_between(mean.index, g[y].min().to_numpy(), g[y].max().to_numpy(), color=color, alpha=0.15, lw=0)
    elif low and low in df and df[low].notna().any():
        ax.fill_between(mean.index, g[low].mean().to_numpy(), g[high].mean().to_numpy(), color=color, alpha=0.15, lw=0)


def _style(ax, title: str, ylabel: str) -> None:
    """A panel's title, axis labels, grid, integer epochs and a legend below the data."""
    ax.set(title=title, xlabel="supernet epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def _save(fig: Figure, res: Results, df: pd.DataFrame, spaces: list[str], path: Path, title: str, caption: str) -> None:
    """Title and caption wrapped to the figure's width, saved without a timestamp."""
    width = int(15 * fig.get_figwidth())  # characters per line at fontsize 9
    text = f"{title} — preset {res.preset}, spaces {', '.join(spaces)}, seeds {seed_text(df)}"
    fig.suptitle(textwrap.fill(text, width) + "\n" + textwrap.fill(caption, width), fontsize=9)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def _curves(res: Results, df: pd.DataFrame, path: Path, draw, ylabel: str, title: str, caption: str) -> None:
    """One panel per space with `draw(ax, space_df)`, labelled, titled and saved without a timestamp."""
    spaces = list(dict.fromkeys(df["space"]))
    fig, axes = _figure(len(spaces))
    for ax, space in zip(axes, spaces):
        draw(ax, df[df["space"] == space])
        _style(ax, f"space {space}", ylabel)
    _save(fig, res, df, spaces, path, title, caption)


def fig1(res: Results, path: Path) -> str | None:
    """Teacher (solid) and student (dashed) top-1 per supernet epoch; returns why it was skipped, or None."""
    df = res.logs[res.logs["label"].isin(FIG1_LABELS) & res.logs["teacher_acc"].notna()]
    if df.empty:
        return "no teacher/student records of ennas, ennas-wo-ds or cream in train_log.jsonl"
    last = res.last[res.last["label"].isin(FIG1_LABELS)]
    if last["teacher_acc_se"].notna().any():
        se = f"probe s.e. at the last epoch (mean over runs): teacher ±{last['teacher_acc_se'].mean():.2f}, "
        se += f"students ±{last['student_acc_se'].mean():.2f} points"
    else:
        se = "probe standard errors not logged"

    def draw(ax, d):
        for label in FIG1_LABELS:
            dl = d[d["label"] == label]
            if len(dl):
                n = dl["seed"].nunique()
                _band(ax, dl, "teacher_acc", COLORS[label], "-", f"{label} teacher (n={n})")
                _band(ax, dl, "student_acc", COLORS[label], "--", f"{label} students")

    caption = f"lines: mean over seeds; bands: min–max over seeds; {se}"
    _curves(res, df, path, draw, "top-1 on probe images (%)", "Teacher vs student top-1", caption)
    return None


def _headroom_panel(ax, d: pd.DataFrame, label: str) -> None:
    """One label's expected within-set ζ per epoch inside the range uniform marginals allow (means over seeds)."""
    g = d.groupby("epoch")[list(KEYS)].mean()
    x = g.index
    ax.fill_between(x, g["min_no_repeats"], g["max"], color="0.88", lw=0, label="min without repeats – max (LP)")
    ax.plot(x, g["max"], color="black", lw=1, label="max under marginals 1/T")
    ax.plot(x, g["no_repeats"], color=COLORS["ennas-beta0"], ls="--", lw=1.2, label="uniform, no repeats (β = 0)")
    ax.plot(x, g["independent"], color=COLORS["ennas-wo-ds"], ls=":", lw=1.5, label="independent picks (wo-ds)")
    ax.plot(x, g["sampler"], color=COLORS[label], marker=".", label=f"{label}'s sampler (n={d['seed'].nunique()})")


def fig2(res: Results, path: Path) -> str | None:
    """Subnet diversity per supernet epoch of ennas, ennas-wo-ds and the beta = 0 control, and beside it, per
    label with ζ estimates, its sets' expected within-set ζ in the range uniform marginals allow (headroom)."""
    df = res.logs[res.logs["label"].isin(FIG2_LABELS) & res.logs["diversity"].notna()]
    room = headroom_table(res)
    room = room[room["label"].isin(FIG2_LABELS)]
    if df.empty and room.empty:
        return "no diversity records or ζ estimates of ennas, ennas-wo-ds or ennas-beta0"
    spaces = [s for s in res.spaces if s in set(df["space"]) | set(room["space"])]
    labels = [label for label in FIG2_LABELS if label in set(room["label"])]
    fig = Figure(figsize=(5.2 * (1 + len(labels)), 5.4 * len(spaces)), layout="constrained")
    for row, space in zip(fig.subplots(len(spaces), 1 + len(labels), squeeze=False), spaces):
        d = df[df["space"] == space]
        for label in FIG2_LABELS:
            dl = d[d["label"] == label]
            if len(dl):
                _band(row[0], dl, "diversity", COLORS[label], "-", f"{label} (n={dl['seed'].nunique()})")
        _style(row[0], f"space {space}: probe sets' logits", "mean pairwise Euclidean distance of logits")
        for ax, label in zip(row[1:], labels):
            r = room[(room["space"] == space) & (room["label"] == label)]
            if r.empty:
                ax.set_axis_off()
                continue
            _headroom_panel(ax, r, label)
            last = r[r["epoch"] == r["epoch"].max()]
            reach = f"reach {last['reach_independent'].mean():.2f} from independent, "
            reach += f"{last['reach_no_repeats'].mean():.2f} from no repeats"
            _style(ax, f"space {space}: ζ headroom of {label}\n({reach})", "expected within-set ζ (layer mean)")
            ax.sharey(row[1])
    caption = (
        "left: lines mean over seeds, bands min–max over seeds; ennas-beta0 = ennas with ennas.beta = 0. "
        "Right: expected within-set ζ (mean ζ over a set's pairs of operators per layer, averaged over layers; "
        "exact, from each run's ζ; mean over seeds) against independent picks, uniform sets without repeats and "
        "the range of samplers with marginals 1/T (grey; min over repeat-free sets). reach = (sampler − reference) "
        "/ (max − reference) at the last epoch. ennas-wo-ds estimates no ζ."
    )
    _save(fig, res, pd.concat([df, room]), spaces, path, "Subnet diversity", caption)
    return None


def ranking_curves(rk: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Supernet τ rows and reference rows (space, ref, tau) from ranking.csv: long form (a `predictor` column,
    as benchmark.ranking writes) or wide form (`flops_tau`, `ceiling_tau` columns)."""
    if rk.empty or not {"epoch", "kendall_tau"} <= set(rk.columns):
        return pd.DataFrame(), pd.DataFrame()
    if "predictor" in rk:
        curves = rk[rk["predictor"] == "supernet"]
        refs = rk[rk["predictor"].isin(["flops", "ceiling"])].rename(columns={"predictor": "ref", "kendall_tau": "tau"})
        if "ceiling_mean_tau" in refs:  # the attainable ceiling against the k-seed means, where written
            attainable = (refs["ref"] == "ceiling") & refs["ceiling_mean_tau"].notna()
            refs = refs.assign(tau=refs["tau"].where(~attainable, refs["ceiling_mean_tau"]))
    else:
        curves = rk
        parts = [rk.assign(ref=c[:-4], tau=rk[c]) for c in ("flops_tau", "ceiling_tau") if c in rk]
        refs = pd.concat(parts) if parts else pd.DataFrame(columns=["space", "ref", "tau"])
    return curves.dropna(subset=["epoch", "kendall_tau"]), refs[["space", "ref", "tau"]].dropna()


def fig3(res: Results, path: Path) -> str | None:
    """Kendall τ of each label's supernet against the ground truth per supernet epoch: one small panel per label
    (and space), each with the FLOPs-only and attainable-ceiling lines, so no band hides another."""
    curves, refs = ranking_curves(res.ranking)
    if curves.empty:
        return "no run has a ranking.csv (with epoch and kendall_tau columns)"
    order = display_order(curves["label"], LABELS)
    spaces = list(dict.fromkeys(curves["space"]))
    panels = [
        (space, label)
        for space in spaces
        for label in sorted(set(curves[curves["space"] == space]["label"]), key=order.get)
    ]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows + 1.2), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel())
    for ax, (space, label) in zip(axes, panels):
        d = curves[(curves["space"] == space) & (curves["label"] == label)]
        color, band = COLORS.get(label, "black"), ("tau_low", "tau_high") if "tau_low" in d else ("", "")
        _band(ax, d, "kendall_tau", color, "-", "supernet τ (mean over seeds; band: min–max)", *band, marker="o")
        if d["epoch"].nunique() == 1:  # ranked at one epoch only (DNA): its spread as an error bar
            g = d["kendall_tau"]
            ax.errorbar(d["epoch"].iloc[:1], [g.mean()], yerr=[[g.mean() - g.min()], [g.max() - g.mean()]],
                        color=color, capsize=4)  # fmt: skip
        for ref, style in (("flops", ":"), ("ceiling", "--")):
            tau = refs[(refs["space"] == space) & (refs["ref"] == ref)]["tau"]
            if len(tau):
                name = "FLOPs alone" if ref == "flops" else "attainable ceiling"
                ax.axhline(tau.mean(), color="black", linestyle=style, lw=1, label=f"{name} τ {tau.mean():.2f}")
        ax.set_title(f"{label} ({space}, n={d['seed'].nunique()})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[: len(panels)]):
        if i % cols == 0:
            ax.set_ylabel("Kendall τ vs ground truth")
        if i >= len(panels) - cols:
            ax.set_xlabel("supernet epoch")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    caption = (
        "one panel per method; band: min–max over seeds (one seed: its 95 % interval); dotted: FLOPs alone; "
        "dashed: attainable ceiling (a noise-free ranker against the ground-truth means)"
    )
    _save(fig, res, curves, spaces, path, "Ranking fidelity", caption)
    return None


FIGURES = {"fig1_teacher_accuracy.png": fig1, "fig2_diversity.png": fig2, "fig3_ranking.png": fig3}
