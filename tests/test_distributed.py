"""Two gloo processes: identical paths and parameters on every rank, gradients averaged exactly, torchrun CLI."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_group(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


def train_few_steps(rank: int, world: int, port: int, out: str) -> None:
    """Train the SPOS supernet for a few steps under the shared loop and save params and sampled paths."""
    join_group(rank, world, port)
    from helpers import preset_config

    import benchmark.methods  # noqa: F401  (registers the methods)
    from ennas.core.context import RunContext
    from ennas.core.method import get_method
    from ennas.core.pipeline import supernet_stage

    overrides = {"supernet": {"epochs": 1, "max_steps_per_epoch": 3}, "progress": False}
    cfg = preset_config("smoke", overrides, method="spos", space="s1")
    ctx = RunContext(cfg, Path(out) / "run", torch.device("cpu"))
    method = get_method("spos")(ctx)
    paths = []
    original = method.sample_paths
    method.sample_paths = lambda rng, e, s: paths.append(original(rng, e, s)) or paths[-1]
    supernet_stage(ctx, method)
    torch.save(
        {"params": {k: v.clone() for k, v in ctx.supernet.state_dict().items()}, "paths": paths},
        Path(out) / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def averaged_gradient(rank: int, world: int, port: int, out: str) -> None:
    """Each rank back-propagates its half of a batch; save the averaged gradient."""
    join_group(rank, world, port)
    from ennas.core import distributed as dist
    from spaces.registry import get_space
    from spaces.supernet import SuperNet

    torch.manual_seed(0)
    net = SuperNet(get_space("s1", "proxy"), 10, 1).eval()  # BN in eval: batch statistics do not differ
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    arch = (1, 9, 2, 3, 4, 9, 5, 6)
    half = slice(rank * 4, rank * 4 + 4)
    torch.nn.functional.cross_entropy(net(x[half], arch), y[half]).backward()
    dist.average_gradients(list(net.parameters()))
    torch.save(
        {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, Path(out) / f"grad{rank}.pt"
    )
    torch.distributed.destroy_process_group()


def test_ranks_sample_identical_paths_and_end_bit_identical(tmp_path):
    mp.spawn(train_few_steps, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(r0["paths"]) == 3 and r0["paths"] == r1["paths"]
    assert len({tuple(p[0]) for p in r0["paths"]}) > 1, "paths should vary between steps"
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
    # the ranks trained: parameters moved away from the seeded initialisation
    assert (tmp_path / "run" / "train_log.jsonl").exists()


def test_averaged_gradient_equals_single_process_gradient(tmp_path):
    mp.spawn(averaged_gradient, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    from spaces.registry import get_space
    from spaces.supernet import SuperNet

    torch.manual_seed(0)
    net = SuperNet(get_space("s1", "proxy"), 10, 1).eval()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    torch.nn.functional.cross_entropy(net(x, (1, 9, 2, 3, 4, 9, 5, 6)), y).backward()
    g0, g1 = (torch.load(tmp_path / f"grad{r}.pt") for r in (0, 1))
    single = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert set(g0) == set(single) == set(g1)
    for name, grad in single.items():
        assert torch.equal(g0[name], g1[name]), name
        torch.testing.assert_close(g0[name], grad, rtol=1e-5, atol=1e-7)


def test_torchrun_smoke_pipeline(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "benchmark.run",
        "--method",
        "spos",
        "--space",
        "s1",
        "--preset",
        "smoke",
        "--run-dir",
        str(out),
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    final = json.loads((out / "final.json").read_text())
    assert final["world_size"] == 2
    assert proc.stdout.count("top1") == 1, "rank 0 alone reports"
