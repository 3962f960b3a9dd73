"""Shared test fixtures: every method registered (with its options section), one thread."""

import pytest
import torch

import benchmark.methods  # noqa: F401  (registers every method and its options section)


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one thread is faster, and fair to other test processes on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The smoke runs every test module may read: the whole pipeline of one method, in this process, made once
# per session on first use (checkpoints every 2 steps, so a resume test can stop mid-epoch; kept at the end, so
# a test can take a finished stage's checkpoint away).
SMOKE_ARGS = [
    *("--space", "s1", "--preset", "smoke", "--set", "supernet.checkpoint_steps=2", "--set", "threads=1"),
    "--keep-checkpoints",
]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`smoke_run(method)` -> the output folder of that method's uninterrupted smoke run."""
    from benchmark.run import main as run_main

    done = {}

    def run(method: str):
        if method not in done:
            out = tmp_path_factory.mktemp(f"smoke-{method}") / "run"
            assert run_main(["--method", method, *SMOKE_ARGS, "--run-dir", str(out)]) == 0
            done[method] = out
        return done[method]

    return run
