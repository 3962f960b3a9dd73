"""Architectures as plain values: a tuple with one choice index per searchable layer.

`encode` gives the index form `2-1-0-1-...`; `decode` accepts that form, the readable form that
`describe` prints (`k3e3-id-shuf5-...`), a tuple or a list, so every CLI and file takes any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from spaces.registry import SpaceSpec

Arch = tuple[int, ...]


def encode(arch: Sequence[int]) -> str:
    """The canonical string of an architecture: choice indices joined by '-'."""
    return "-".join(str(int(c)) for c in arch)


def describe(space: SpaceSpec, arch: Sequence[int]) -> str:
    """The readable string of an architecture: candidate names joined by '-'."""
    check_arch(space, arch)
    return "-".join(layer.choices[c]["name"] for layer, c in zip(space.layers, arch))


def check_arch(space: SpaceSpec, arch: Sequence[int]) -> None:
    """Raise a clear ValueError unless `arch` has one valid choice per layer of `space`."""
    if len(arch) != len(space.layers):
        raise ValueError(
            f"architecture has {len(arch)} choices but space {space.name}/{space.scale} has {len(space.layers)} layers"
        )
    for i, (c, n) in enumerate(zip(arch, space.num_choices)):
        if not 0 <= c < n:
            raise ValueError(f"layer {i} of space {space.name}/{space.scale} has choices 0..{n - 1}, got {c}")


def decode(space: SpaceSpec, value: str | Sequence[int]) -> Arch:
    """Parse an architecture given as index string, readable string, or sequence of ints; validate it."""
    if isinstance(value, str):
        tokens = [t for t in value.strip().replace(",", "-").split("-") if t]
        if len(tokens) != len(space.layers):
            raise ValueError(
                f"architecture {value!r} has {len(tokens)} entries; space {space.name}/{space.scale} "
                f"has {len(space.layers)} layers"
            )
        arch = []
        for i, (token, layer) in enumerate(zip(tokens, space.layers)):
            if token.isdigit():
                arch.append(int(token))
            elif token in layer.choice_names:
                arch.append(layer.choice_names.index(token))
            else:
                raise ValueError(f"layer {i}: {token!r} is not a choice; choices: {', '.join(layer.choice_names)}")
        value = arch
    arch = tuple(int(c) for c in value)
    check_arch(space, arch)
    return arch


def sample_uniform(space: SpaceSpec, rng: np.random.Generator) -> Arch:
    """One architecture with every layer's choice drawn uniformly and independently."""
    return tuple(int(rng.integers(n)) for n in space.num_choices)


def sample_arch(
    space: SpaceSpec,
    rng: np.random.Generator,
    flops_fn: Callable[[Arch], float] | None = None,
    flops_range: tuple[float, float] | None = None,
    max_tries: int = 500,
) -> Arch:
    """A uniform random architecture, optionally rejection-sampled into a FLOPs band (SPOS: 500 tries)."""
    if flops_range is None:
        return sample_uniform(space, rng)
    if flops_fn is None:
        raise ValueError("a FLOPs band needs a FLOPs function (e.g. FlopsTable(...).flops)")
    low, high = flops_range
    for _ in range(max_tries):
        arch = sample_uniform(space, rng)
        if low <= flops_fn(arch) <= high:
            return arch
    raise ValueError(
        f"no architecture of {space.name}/{space.scale} within FLOPs [{low:.0f}, {high:.0f}] after {max_tries} tries"
    )
