"""Presets, overrides and validation resolve into one frozen configuration."""

import dataclasses

import pytest

from ennas.config import ConfigError, from_dict, list_presets, parse_overrides, resolve


def test_presets_resolve_and_round_trip():
    assert {"imagenet", "proxy", "smoke"} <= set(list_presets())
    for name in list_presets():
        cfg = resolve(name, method="spos", space="s1")
        assert from_dict(cfg.to_dict()) == cfg


def test_imagenet_preset_is_the_papers_recipe():
    cfg = resolve("imagenet")
    s, r, d = cfg.supernet, cfg.retrain, cfg.distill
    assert (s.epochs, s.lr, s.momentum, s.weight_decay, s.batch_size, s.label_smoothing) == (
        120,
        0.5,
        0.9,
        4e-5,
        1024,
        0.1,
    )
    assert (d.start_epoch, d.m) == (20, 4)
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
    cfg = resolve("smoke", parse_overrides(["supernet.lr=0.3", "distill.m=2", "supernet.flops_band=[1e6, 5e6]"]))
    assert cfg.supernet.lr == 0.3 and cfg.distill.m == 2 and cfg.supernet.flops_band == (1e6, 5e6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


@pytest.mark.parametrize(
    "item,message",
    [
        ("supernet.lr=fast", "supernet.lr"),
        ("supernet.nope=1", "unknown setting 'supernet.nope'"),
        ("distill.solver=magic", "distill.solver must be newton or ecos"),
        ("progress=3", "expected true or false"),
        ("supernet=3", "is a section"),
        ("search.topk=99", "search.topk must be <= search.population"),
    ],
)
def test_bad_overrides_fail_with_the_setting_named(item, message):
    with pytest.raises(ConfigError, match=message):
        resolve("smoke", parse_overrides([item]))
