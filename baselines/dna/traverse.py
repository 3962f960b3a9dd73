"""DNA's search: the exact traversal of summed block ratings under a cost budget (plain functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(options: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the options no other option beats in both rating and cost, by rating ascending, cost descending."""
    front, cheapest = [], math.inf
    for i in sorted(range(len(options)), key=lambda i: (options[i][0], options[i][1], i)):
        if options[i][1] < cheapest:
            front.append(i)
            cheapest = options[i][1]
    return front


def traverse(options: Sequence[Sequence[tuple[float, float]]], budget: float) -> tuple[list[int], float, float]:
    """The choice per block minimising the summed rating with summed cost <= budget (exact); options: (rating, cost).

    As the official traversal, each block's budget is what the earlier choices left minus the cheapest cost
    of the blocks after it; candidates are visited best-rated first, and a branch stops as soon as even the
    best ratings of the remaining blocks cannot beat the best sum found. Only each block's Pareto front
    (rating vs cost) can be part of an optimum, which keeps the search small.
    """
    fronts = [pareto_front(block) for block in options]
    n = len(options)
    min_cost = [min(c for _, c in block) for block in options] + [0.0]
    min_rating = [min(r for r, _ in block) for block in options] + [0.0]
    rest_cost = [sum(min_cost[i:]) for i in range(n + 1)]
    rest_rating = [sum(min_rating[i:]) for i in range(n + 1)]
    best: list = [math.inf, None, None]
    chosen: list[int] = []

    def visit(i: int, rating: float, cost: float) -> None:
        if i == n:
            if rating < best[0]:
                best[:] = [rating, list(chosen), cost]
            return
        for k in fronts[i]:
            r, c = options[i][k]
            if rating + r + rest_rating[i + 1] >= best[0]:
                break  # later candidates rate worse still
            if cost + c + rest_cost[i + 1] > budget:
                continue  # over this block's budget; cheaper ones follow
            chosen.append(k)
            visit(i + 1, rating + r, cost + c)
            chosen.pop()

    visit(0, 0.0, 0.0)
    if best[1] is None:
        raise ValueError(f"no combination of block candidates fits the budget {budget:.0f}")
    return best[1], best[0], best[2]
