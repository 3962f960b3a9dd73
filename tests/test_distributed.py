"""Two gloo processes: identical paths and parameters on every rank, gradients averaged exactly, candidate scores
independent of the world size, torchrun CLI."""

import os
import socket
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


def score_candidates(rank: int, world: int, port: int, out: str, overrides: dict) -> None:
    """The evolution stage (and random search) on the seeded, untrained smoke supernet; save who scored what."""
    if world > 1:
        join_group(rank, world, port)
    else:
        torch.set_num_threads(1)
    from helpers import preset_config

    import benchmark.methods  # noqa: F401  (registers the methods)
    import ennas.core.evolution as evolution
    from ennas.core.context import RunContext

    cfg = preset_config("smoke", overrides, method="spos", space="s1")
    ctx = RunContext(cfg, Path(out) / "run", torch.device("cpu"))
    scored, score_path = [], evolution.score_path
    evolution.score_path = lambda model, arch, *a: scored.append(arch) or score_path(model, arch, *a)
    result = evolution.evolution_stage(ctx, ctx.supernet)
    torch.save({"result": result, "scored": scored}, Path(out) / f"scores{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def test_candidate_scores_do_not_depend_on_the_world_size(tmp_path):
    """Each rank scores whole candidates on the full fixed batches, so 2 ranks log exactly 1 rank's scores.

    The 2-rank run also keeps its fixed batches on disk (rank 0 draws, both memory-map), the 1-rank run in memory.
    """
    one, two = tmp_path / "one", tmp_path / "two"
    mp.spawn(score_candidates, args=(1, 0, str(one), {}), nprocs=1, join=True)
    mp.spawn(score_candidates, args=(2, free_port(), str(two), {"data": {"host_cache_gib": 0.0}}), nprocs=2, join=True)
    from ennas.core.io import read_jsonl

    for log in ("search.jsonl", "random_search.jsonl"):
        single, double = read_jsonl(one / "run" / log), read_jsonl(two / "run" / log)
        assert len(single) == 18 and single == double, log
    assert (two / "run" / "fixed" / "recal.images.npy").exists() and not (one / "run" / "fixed").exists()
    s1, r0, r1 = (torch.load(d / f"scores{r}.pt", weights_only=False) for d, r in ((one, 0), (two, 0), (two, 1)))
    for key in ("arch", "search_score", "random_search"):
        assert r0["result"][key] == r1["result"][key] == s1["result"][key], key
    assert sorted(r0["scored"] + r1["scored"]) == sorted(s1["scored"]), "every candidate scored once, on one rank"
    assert abs(len(r0["scored"]) - len(r1["scored"])) <= 2, "the ranks share the work"


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
