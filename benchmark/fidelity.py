"""Ranking fidelity of a run's supernet, epoch by epoch, against a stand-alone ground truth.

    python -m benchmark.fidelity runs/proxy/spos-s1-seed0 --groundtruth results/proxy/groundtruth_s1.csv
    python -m benchmark.fidelity results/proxy/*-s1-seed* --groundtruth results/proxy/groundtruth_s1.csv --from-scores

The run is rebuilt from its `config.json`; every ground-truth architecture is scored as the evolution search
scores a candidate (`ennas.core.evaluate.score_path` on the run's fixed recalibration and search batches)
with the weights of each epoch: `snapshots/supernet_epoch{E}.pt` (E 0-based, saved after epoch E) and the
final `supernet.pt` as the last epoch where no snapshot of it exists. Scores are memoised in
`ranking_scores.jsonl` (one line per epoch and architecture), so a rerun scores only what is missing; the
fidelity rows (`benchmark.ranking.fidelity`, one block per epoch) go to `ranking.csv` in long form.

With --from-scores no weights are needed (nor torch's model): ranking.csv is rewritten from the memoised
scores alone, e.g. for runs whose weights were not kept, after the statistics changed. Several RUN_DIRs may be
given; each is checked before any is scored.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import torch

import benchmark.methods  # noqa: F401  (registers every method's options section, which config.json holds)
from benchmark.ranking import fidelity, load_groundtruth, ranking_table, write_ranking_csv
from ennas.core import distributed as dist
from ennas.core.config import ConfigError, from_dict
from ennas.core.context import RunContext
from ennas.core.io import load_torch, read_json, read_jsonl, write_jsonl
from ennas.core.method import get_method
from ennas.data import DataError
from spaces.arch import decode, encode
from spaces.registry import SpaceSpec, get_space

SNAPSHOT = re.compile(r"supernet_epoch(\d+)\.pt")


def run_context(run_dir: Path) -> RunContext:
    """The run's context rebuilt from its config.json (the environment it recorded aside)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: RUN_DIR must be a run's output folder")
    cfg = from_dict({k: v for k, v in read_json(path).items() if k != "environment"})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return RunContext(cfg, Path(run_dir), dist.pick_device(cfg.device))


def supernet_weights(run_dir: Path, epochs: int) -> dict[int, Path]:
    """Weights by 0-based epoch: every snapshot, and supernet.pt as epoch `epochs - 1` unless snapshotted."""
    run_dir = Path(run_dir)
    found = {
        int(m.group(1)): p
        for p in (run_dir / "snapshots").glob("supernet_epoch*.pt")
        if (m := SNAPSHOT.fullmatch(p.name))
    }
    final = run_dir / "supernet.pt"
    if final.exists():
        found.setdefault(epochs - 1, final)
    if not found:
        raise FileNotFoundError(f"{run_dir} has no supernet weights (supernet.pt or snapshots/supernet_epoch*.pt)")
    return dict(sorted(found.items()))


def canonical_truth(space: SpaceSpec, truth: pd.DataFrame, csv_path: Path) -> pd.DataFrame:
    """The ground truth with architectures in the index form, after checking it was made in the run's space."""
    sidecar = csv_path.with_name(csv_path.name + ".json")
    if sidecar.exists():
        made = read_json(sidecar)
        if (made.get("space"), made.get("scale")) != (space.name, space.scale):
            raise ConfigError(
                f"{csv_path} is a ground truth of {made.get('space')}/{made.get('scale')}, "
                f"the run searched {space.name}/{space.scale}"
            )
    # Any accepted spelling (readable names, commas) becomes the form the scores are keyed by.
    return truth.assign(arch=[encode(decode(space, a)) for a in truth["arch"]])


def score_epochs(ctx: RunContext, weights: dict[int, Path], archs: list[str]) -> dict[int, dict[str, float]]:
    """Scores of `archs` under each epoch's weights, read from ranking_scores.jsonl where already there.

    Each architecture is scored as the run's own search scores candidates (`Method.arch_scorer`: path accuracy
    with BN recalibrated for most; DNA's summed block ratings against its teacher, with the method's state
    from supernet.pt; DNA keeps no per-epoch snapshots, so only its final weights are ranked).
    """
    method = get_method(ctx.cfg.method)(ctx)
    memo_path = ctx.file("ranking_scores.jsonl")
    records = read_jsonl(memo_path)
    # Keyed by the weights' file too: a snapshot that appeared since stands for its epoch, not supernet.pt.
    memo = {(r["epoch"], r["weights"], r["arch"]): r["score"] for r in records}
    scores: dict[int, dict[str, float]] = {}
    for epoch, path in weights.items():
        name = path.relative_to(ctx.out).as_posix()
        missing = [a for a in archs if (epoch, name, a) not in memo]
        if missing:  # load the weights only when something is left to score with them
            state = load_torch(path, ctx.device)
            ctx.supernet.load_state_dict(state["model"])
            if state.get("method"):
                method.load_state_dict(state["method"])
            scorer = method.arch_scorer(ctx.supernet)
        for arch in missing:
            score = scorer(decode(ctx.space, arch))
            memo[(epoch, name, arch)] = score
            records.append({"epoch": epoch, "weights": name, "arch": arch, "score": score})
            write_jsonl(memo_path, records)  # after every score: an interrupted rerun keeps what it scored
        scores[epoch] = {a: memo[(epoch, name, a)] for a in archs}
    return scores


def ranking_for_run(run_dir: str | Path, groundtruth_csv: str | Path, epochs: str = "all") -> list[dict]:
    """Fidelity rows (with an `epoch` column) of a run's supernet per epoch, also written to RUN_DIR/ranking.csv."""
    if epochs not in ("all", "last"):
        raise ConfigError(f"--epochs must be all or last, got {epochs!r}")
    ctx = run_context(Path(run_dir))
    truth = canonical_truth(ctx.space, load_groundtruth(groundtruth_csv), Path(groundtruth_csv))
    weights = supernet_weights(ctx.out, ctx.cfg.supernet.epochs)
    if epochs == "last":
        weights = dict([max(weights.items())])
    archs = sorted(set(truth["arch"]))
    scores = score_epochs(ctx, weights, archs)
    rows = [{"epoch": epoch, **row} for epoch, s in scores.items() for row in fidelity(s, truth)]
    write_ranking_csv(rows, ctx.file("ranking.csv"))
    return rows


def memoised_scores(run_dir: Path, archs: list[str]) -> dict[int, dict[str, float]]:
    """Scores per epoch from ranking_scores.jsonl alone, as `score_epochs` would use them: per epoch a snapshot's
    scores before supernet.pt's (a snapshot stands for its epoch); an epoch lacking an architecture is an error."""
    by_epoch: dict[int, dict[str, dict[str, float]]] = {}
    for r in read_jsonl(Path(run_dir) / "ranking_scores.jsonl"):
        by_epoch.setdefault(int(r["epoch"]), {}).setdefault(r["weights"], {})[r["arch"]] = float(r["score"])
    if not by_epoch:
        raise FileNotFoundError(f"{run_dir} has no memoised scores (ranking_scores.jsonl) to rank from")
    scores = {}
    for epoch, per_weights in sorted(by_epoch.items()):
        name = min(per_weights, key=lambda w: (w == "supernet.pt", w))
        missing = [a for a in archs if a not in per_weights[name]]
        if missing:
            raise ValueError(
                f"{run_dir}/ranking_scores.jsonl lacks {len(missing)} ground-truth architectures at epoch {epoch} "
                f"(e.g. {missing[0]}): score them with the weights, without --from-scores"
            )
        scores[epoch] = {a: per_weights[name][a] for a in archs}
    return scores


def ranking_from_scores(run_dir: str | Path, groundtruth_csv: str | Path, epochs: str = "all") -> list[dict]:
    """`ranking_for_run` without weights: ranking.csv rewritten from the run's memoised scores and config.json."""
    cfg = read_json(Path(run_dir) / "config.json")
    space = get_space(cfg["space"], cfg["scale"])
    truth = canonical_truth(space, load_groundtruth(groundtruth_csv), Path(groundtruth_csv))
    scores = memoised_scores(Path(run_dir), sorted(set(truth["arch"])))
    if epochs == "last":
        scores = dict([max(scores.items())])
    rows = [{"epoch": epoch, **row} for epoch, s in scores.items() for row in fidelity(s, truth)]
    write_ranking_csv(rows, Path(run_dir) / "ranking.csv")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, documented in --help."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.fidelity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run_dir", type=Path, nargs="+", help="run output folders (config.json, supernet.pt, snapshots/)")
    p.add_argument("--groundtruth", type=Path, required=True, help="CSV written by benchmark.groundtruth")
    p.add_argument("--epochs", default="all", choices=("all", "last"), help="every snapshot (default) or the last")
    p.add_argument("--from-scores", action="store_true", help="rank from ranking_scores.jsonl alone, without weights")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p.parse_args(argv)


def _check(run_dirs: list[Path], groundtruth: Path, from_scores: bool) -> None:
    """Every folder is a run (with memoised scores where asked for) and the ground truth reads: before any work."""
    load_groundtruth(groundtruth)
    for run_dir in run_dirs:
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"{run_dir / 'config.json'} not found: RUN_DIR must be a run's output folder")
        if from_scores and not (run_dir / "ranking_scores.jsonl").is_file():
            raise FileNotFoundError(f"{run_dir} has no ranking_scores.jsonl to rank from (drop --from-scores)")


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints τ per epoch and the last epoch's table per run; bad input is one line and exit status 2."""
    args = parse_args(argv)
    rank = ranking_from_scores if args.from_scores else ranking_for_run
    try:
        _check(args.run_dir, args.groundtruth, args.from_scores)
        for run_dir in args.run_dir:
            rows = rank(run_dir, args.groundtruth, args.epochs)
            last = max(r["epoch"] for r in rows)
            for epoch in sorted({r["epoch"] for r in rows}):
                taus = "  ".join(f"{r['predictor']} {r['kendall_tau']:.3f}" for r in rows if r["epoch"] == epoch)
                print(f"epoch {epoch}: Kendall τ  {taus}")
            print(
                ranking_table([{k: v for k, v in r.items() if k != "epoch"} for r in rows if r["epoch"] == last]),
                end="",
            )
            print(f"-> {run_dir / 'ranking.csv'}")
    except (ConfigError, DataError, ValueError, KeyError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
