"""Presets, overrides and validation resolve into one frozen configuration."""

import dataclasses

import pytest
from helpers import preset_config

from benchmark.preset import list_presets
from ennas.core.config import ConfigError, from_dict, parse_overrides


def test_presets_resolve_and_round_trip():
    assert {"imagenet", "proxy", "smoke"} <= set(list_presets())
    for name in list_presets():
        cfg = preset_config(name, method="spos", space="s1")
        assert from_dict(cfg.to_dict()) == cfg
        assert {"ennas", "cream", "dna"} <= set(cfg.to_dict())  # every method's section, at the top level


def test_imagenet_preset_is_the_papers_recipe():
    cfg = preset_config("imagenet")
    s, r, d = cfg.supernet, cfg.retrain, cfg.distill
    assert (s.epochs, s.lr, s.momentum, s.weight_decay, s.batch_size, s.label_smoothing) == (
        120,
        0.5,
        0.9,
        4e-5,
        1024,
        0.1,
    )
    assert (d.start_epoch, cfg.options("ennas").m) == (20, 4)
    assert (r.epochs, r.optimizer, r.lr, r.weight_decay) == (500, "rmsproptf", 0.064, 1e-5)
    e = cfg.search
    assert (e.population, e.generations, e.topk, e.mutation_prob, e.num_mutation, e.num_crossover) == (
        50,
        20,
        10,
        0.1,
        25,
        25,
    )


def test_overrides_are_typed_and_frozen():
    cfg = preset_config("smoke", parse_overrides(["supernet.lr=0.3", "ennas.m=2", "supernet.flops_band=[1e6, 5e6]"]))
    assert cfg.supernet.lr == 0.3 and cfg.options("ennas").m == 2 and cfg.supernet.flops_band == (1e6, 5e6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


@pytest.mark.parametrize(
    "item,message",
    [
        ("supernet.lr=fast", "supernet.lr"),
        ("supernet.nope=1", "unknown setting 'supernet.nope'"),
        ("ennas.solver=magic", "ennas.solver must be one of newton, ecos"),
        ("ennas.nope=1", "unknown setting 'ennas.nope'"),
        ("ennas=3", "is a section"),
        ("cream.board_size=0", "cream.board_size must be >= 1"),
        ("progress=3", "expected true or false"),
        ("supernet=3", "is a section"),
        ("search.topk=99", "search: topk 99 exceeds the population 6"),
        ("data.test_size=0", "test_size must be a whole number >= 1"),
    ],
)
def test_bad_overrides_fail_with_the_setting_named(item, message):
    with pytest.raises(ConfigError, match=message):
        preset_config("smoke", parse_overrides([item]))
