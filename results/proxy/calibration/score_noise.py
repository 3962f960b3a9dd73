"""How much of a supernet's ranking of the ground-truth architectures is scoring noise? (issue 13 study)

    python results/proxy/calibration/score_noise.py results/proxy/spos-s1-seed0 [--weights supernet.pt] [--name NAME]

The search scores a candidate on `search.eval_images` (1,000) search-split images after recalibrating BN on
`search.recal_batches` x 128 augmented images. This scores every ground-truth architecture with the run's final
weights on all 4,000 search-split images, kept per quarter of 1,000, once with the run's recalibration and once
with 4x as many recalibration images. It prints:
- Kendall tau between the quarters' scores (how well one 1,000-image score ranks like another: the scoring's
  own repeatability), and the sd of a quarter's score around the architecture's 4,000-image mean;
- tau of each variant (1,000 images as the search does, 4,000 images; 4 or 16 recal batches) against the
  ground truth's seed-0 test top-1 and its mean over seeds (what ranking.csv uses), and against FLOPs.
Rows go to score_noise_<NAME>.jsonl beside this script (NAME defaults to the run folder's name; one row per
architecture, resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau

import benchmark.methods  # noqa: F401  (registers the methods' option sections that config.json holds)
from benchmark.fidelity import run_context
from ennas.core.context import RunContext
from ennas.core.evaluate import recalibrate_bn
from ennas.core.io import load_torch
from spaces.arch import decode

HERE = Path(__file__).parent
QUARTER = 1000


def correct_per_quarter(net, batches, device) -> list[int]:
    """Correct top-1 predictions of `net` in each 1,000-image quarter of `batches` (in order)."""
    counts, seen = [], 0
    with torch.no_grad():
        for x, y in batches:
            hit = (net(x).argmax(1).cpu() == y).tolist()
            for h in hit:
                if seen % QUARTER == 0:
                    counts.append(0)
                counts[-1] += int(h)
                seen += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--weights", default="supernet.pt")
    p.add_argument("--groundtruth", type=Path, default=Path("results/proxy/groundtruth_s1.csv"))
    p.add_argument("--name", help="names the output file (default: the run folder's name)")
    args = p.parse_args(argv)
    base = run_context(args.run_dir)
    torch.set_num_threads(1)
    search = dataclasses.replace(base.cfg.search, eval_images=4 * QUARTER)
    ctx = RunContext(dataclasses.replace(base.cfg, search=search), base.out, base.device)
    more = dataclasses.replace(search, recal_batches=4 * search.recal_batches)
    ctx_more = RunContext(dataclasses.replace(base.cfg, search=more), base.out, base.device)
    search_batches = list(ctx.search_batches)  # drawn once, the same 4,000 images for every architecture
    assert sum(len(y) for _, y in search_batches) == 4 * QUARTER, "the search split holds fewer than 4,000 images"
    recal = {"recal4": ctx.recal_batches, "recal16": ctx_more.recal_batches}
    state = load_torch(args.run_dir / args.weights, base.device)
    ctx.supernet.load_state_dict(state["model"])

    truth = pd.read_csv(args.groundtruth)
    g0 = truth[truth.seed == 0].set_index("arch")
    out = HERE / f"score_noise_{args.name or args.run_dir.name}.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {r["arch"] for r in rows}
    for arch in g0.index:
        if arch in done:
            continue
        row = {"arch": arch, "weights": args.weights}
        for name, batches in recal.items():
            net = ctx.supernet.extract(decode(ctx.space, arch)).to(base.device)
            recalibrate_bn(net, batches, None, device=base.device, over_ranks=False)
            net.eval()
            row[name] = correct_per_quarter(net, search_batches, base.device)
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(arch, row["recal4"], row["recal16"], flush=True)

    mean_top1 = truth.groupby("arch")["test_top1"].mean().rename("mean_top1")
    df = pd.DataFrame(rows).set_index("arch").join(g0[["test_top1", "mflops"]]).join(mean_top1)
    for name in recal:
        q = np.array(df[name].tolist(), dtype=float) / 10  # % per quarter
        pairs = [kendalltau(q[:, i], q[:, j])[0] for i, j in itertools.combinations(range(4), 2)]
        sd = float(np.sqrt(((q - q.mean(1, keepdims=True)) ** 2).sum(1).mean() / 3))
        full = q.mean(1)
        print(
            f"{name}: quarter-vs-quarter tau mean {np.mean(pairs):.3f} (range {min(pairs):.3f}..{max(pairs):.3f}); "
            f"within-arch sd of a 1,000-image score {sd:.2f} points; between-arch sd of the 4,000-image score "
            f"{full.std(ddof=1):.2f}"
        )
        print(
            f"  tau vs ground truth: first 1,000 images {kendalltau(q[:, 0], df.test_top1)[0]:.3f}, "
            f"4,000 images {kendalltau(full, df.test_top1)[0]:.3f} (seed 0); against the mean over seeds: "
            f"{kendalltau(q[:, 0], df.mean_top1)[0]:.3f}, {kendalltau(full, df.mean_top1)[0]:.3f}; tau vs FLOPs (4,000) "
            f"{kendalltau(full, df.mflops)[0]:.3f}; n = {len(df)}"
        )
    print(
        f"FLOPs alone vs ground truth: tau {kendalltau(df.mflops, df.test_top1)[0]:.3f} (seed 0), "
        f"{kendalltau(df.mflops, df.mean_top1)[0]:.3f} (mean over seeds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
