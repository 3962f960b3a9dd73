"""Cream (Peng et al., 2020): the method (`method`) and its board and meta-matching (`board`)."""

from baselines.cream.board import Entry, admit, choose_teacher, meta_ratings, path_parameters, soft_target_ce
from baselines.cream.method import Cream, CreamOptions

__all__ = [
    "Cream",
    "CreamOptions",
    "Entry",
    "admit",
    "choose_teacher",
    "meta_ratings",
    "path_parameters",
    "soft_target_ce",
]
