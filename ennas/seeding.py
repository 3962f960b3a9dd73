"""The one place a run's random streams are derived, so no stage depends on another stage's draws.

Every draw of a run is a function of the run's seed and the name of the stream it belongs to:
- `stream_seed(seed, stream, *keys)`: a 63-bit integer for a named stream (init, paths, supernet data order,
  search, retrain, probe, diversity, teacher), optionally refined by keys such as the epoch;
- `path_rng(seed, epoch, step)`: the numpy generator that samples one step's paths, identical on every rank;
- `generator(seed, *keys)`: a private torch generator (data splits, epoch permutations, DataLoader seeds);
- `seed_torch(seed, stream, *keys)`: seeds torch's global RNG (weight initialisation, in-process
  augmentation), the only way the suite touches it.
The three formulas differ (they date from separate modules) and are kept as they are, because changing one
changes every result: they are documented side by side here instead.
"""

from __future__ import annotations

import numpy as np
import torch

# Keys that separate the random streams of the stages.
STREAMS = {"init": 0, "paths": 1, "supernet": 2, "search": 3, "retrain": 4, "probe": 5, "diversity": 6, "teacher": 7}
# Keeps the data layer's draws (splits, synthetic data) apart from the EpochSampler's (seed, round) streams.
SPLIT_KEY = 0xDA7A


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed for one named random stream of a run, so stages do not depend on each other's draws."""
    state = np.random.SeedSequence([seed, STREAMS[stream], *keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def path_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator that samples the paths of one step: a function of (seed, epoch, step) only."""
    return np.random.default_rng([seed, STREAMS["paths"], epoch, step])


def generator(seed: int, *keys: int) -> torch.Generator:
    """A private torch generator for (seed, *keys), so no draw touches or depends on the global RNG."""
    # SeedSequence mixes the keys well, unlike seed + epoch, whose streams overlap between runs; the
    # key count goes in too because SeedSequence ignores trailing zeros ((s, 0) would equal (s,)).
    state = np.random.SeedSequence([seed, len(keys), *keys]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def seed_torch(seed: int, stream: str, *keys: int) -> None:
    """Seed torch's global RNG from a named stream (before initialising weights or drawing augmentation)."""
    torch.manual_seed(stream_seed(seed, stream, *keys))
