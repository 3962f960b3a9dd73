"""SPOS (Guo et al., 2020): one uniform random path per step, optionally within a FLOPs band.

The behaviour is the shared `Method` core: `zero_grad(set_to_none=True)` leaves every operator off the
path with grad None, so, as in the official code, SGD moves it by neither momentum nor weight decay.
"""

from __future__ import annotations

from ennas.methods import Method, register_method


@register_method
class SPOS(Method):
    """Single-path one-shot training with uniform sampling."""

    name = "spos"
