"""Helpers shared by the test modules (import as `from helpers import ...`)."""

from benchmark.preset import load_preset
from ennas.core.config import resolve


def preset_config(preset: str, overrides: dict | None = None, **top):
    """A resolved RunConfig from a shipped preset, as the CLI builds it."""
    return resolve(load_preset(preset), overrides, **top)


def torchrun_command(port: int, *args: str) -> list[str]:
    """`benchmark.run` on two gloo ranks of one machine under torchrun, with `args`."""
    import sys

    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    return [*run, "-m", "benchmark.run", *args]
