"""The example of docs/adding-a-method.md is a real method: examples/fair_spos.py, shown on that page verbatim,
registered here (for this module only) and put through the method contract of test_method_contract.py."""

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import test_method_contract as contract
import torch
from conftest import SMOKE_ARGS
from helpers import preset_config

from benchmark.harness import known_labels
from benchmark.run import main as run_main
from ennas.core.config import SECTIONS
from ennas.core.context import RunContext
from ennas.core.io import read_jsonl
from ennas.core.method import METHODS
from ennas.seeding import path_rng

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "fair_spos.py"
PAGE = REPO / "docs" / "adding-a-method.md"
NAME = "fair-spos"
pytestmark = pytest.mark.usefixtures("one_thread")


@contextlib.contextmanager
def registered_example():
    """The example module, imported from its file as a user's module would be, which registers it; afterwards
    the registry (methods and options sections) is as it was, so no other test sees a sixth method."""
    methods, sections = dict(METHODS), dict(SECTIONS)
    spec = importlib.util.spec_from_file_location("fair_spos", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where dataclasses look up the module's annotations
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]
        METHODS.clear()
        METHODS.update(methods)
        SECTIONS.clear()
        SECTIONS.update(sections)


@pytest.fixture(scope="module", autouse=True)
def example():
    """The example, registered for this module's tests."""
    with registered_example() as module:
        yield module


def test_the_page_shows_the_file_verbatim():
    assert f"```python\n{EXAMPLE.read_text()}```" in PAGE.read_text()


def test_registering_the_module_adds_the_method_and_its_section(example):
    assert METHODS[NAME] is example.FairSPOS and SECTIONS["fair"] is example.FairOptions
    assert NAME in known_labels()  # so --method fair-spos and --method all take it
    contract.test_registered_with_its_options_section(NAME)


def test_every_operator_of_every_layer_is_trained_once_per_step(tmp_path):
    cfg = preset_config("smoke", method=NAME, space="s1")
    method = METHODS[NAME](RunContext(cfg, tmp_path, torch.device("cpu")))
    paths = method.sample_paths(path_rng(cfg.seed, 0, 3), 0, 3)
    counts = method.ctx.space.num_choices
    assert len(paths) == method.paths_per_step() == max(counts) and method.epoch_fraction() == 1 / max(counts)
    for layer, n in enumerate(counts):
        picked = [p[layer] for p in paths]
        assert set(picked) == set(range(n)) and len(picked) - len(set(picked)) == max(counts) - n
    assert paths == method.sample_paths(path_rng(cfg.seed, 0, 3), 0, 3)  # a function of (seed, epoch, step)
    assert paths != method.sample_paths(path_rng(cfg.seed, 0, 4), 0, 4)


def test_two_steps_train_only_the_active_paths(tmp_path):
    contract.test_two_steps_of_every_loop_train_only_the_active_paths(NAME, tmp_path)


def test_the_smoke_pipeline_leaves_every_result_file(smoke_run):
    contract.test_smoke_pipeline_leaves_every_result_file(NAME, smoke_run)
    supernet = [r for r in read_jsonl(smoke_run(NAME) / "train_log.jsonl") if r["stage"] == "supernet"]
    assert [r["epoch"] for r in supernet] == [0, 1] and all(np.isfinite(r["loss"]) for r in supernet)


def test_its_options_are_settings_and_bad_ones_are_one_line(tmp_path, capsys):
    assert preset_config("smoke", {"fair": {"paths": "3"}}, method=NAME).options("fair").paths == 3
    contract.test_unknown_option_of_its_section_is_one_line_error(NAME, tmp_path, capsys)
    rc = run_main(["--method", NAME, *SMOKE_ARGS, "--run-dir", str(tmp_path / "y"), "--set", "fair.paths=-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: fair.paths must be >= 0"], err


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_uninterrupted_result(smoke_run, tmp_path, monkeypatch):
    contract.test_stopped_run_resumes_to_the_uninterrupted_result(NAME, smoke_run, tmp_path, monkeypatch)
