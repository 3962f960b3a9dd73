"""Run configuration: frozen dataclasses resolved once from a preset (a plain dict) plus `key=value` overrides.

The core sections (data, supernet, distill, search, retrain) are defined here; every method contributes
its own options section (`register_options`, called by the method registry), so a new method never edits
this file. The resolved configuration is validated here, written as `config.json` beside the results and
stored in every checkpoint. Preset files are found and read by `benchmark`, which passes their contents down.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ennas.core.search import EvolutionConfig
from spaces.registry import SCALES
from spaces.shared import SHARING


class ConfigError(ValueError):
    """A bad preset, override or value, reported in one line."""


@dataclass(frozen=True)
class Options:
    """Base of a method's options section; `checks()` lists its (ok, message) rules, validated with the rest."""

    def checks(self) -> list[tuple[bool, str]]:
        """Rules as (holds, message naming the key); none by default."""
        return []


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where, and how it is cut and loaded."""

    dataset: str = "fashion-mnist"
    root: str | None = None
    train_size: int | None = None  # use only the first n training images (after the search split); None: all
    search_size: int | None = None  # None: the proportional default of the data layer
    recal_size: int | None = None
    test_size: int | None = None  # evaluate only the first n test images (quick checks); None: the whole test set
    num_workers: int = 0
    options: dict = field(default_factory=dict)  # extra dataset builder options (e.g. synthetic sizes)
    # fixed recalibration / search batches (uint8) up to this size stay in host memory; larger ones are cached in
    # the run folder (fixed/*.npy) and memory-mapped
    host_cache_gib: float = 2.0
    # where training images are decoded and augmented: "cpu" (loader workers, PIL) or "device" (ImageNet only:
    # workers ship file bytes, decode_jpeg and tensor augmentation run on the device; other draws, another run)
    decode: str = "cpu"

    def __post_init__(self) -> None:
        if self.decode not in ("cpu", "device"):
            raise ValueError(f"decode must be cpu or device, got {self.decode!r}")
        if self.decode == "device" and self.dataset != "imagenet":
            raise ValueError(
                f"decode=device decodes ImageNet's JPEG files on the device; dataset {self.dataset!r} has no such "
                "path (set data.decode=cpu)"
            )
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a whole number >= 0, got {self.num_workers!r}")
        if self.test_size is not None and not (isinstance(self.test_size, int) and self.test_size >= 1):
            raise ValueError(
                f"test_size must be a whole number >= 1 (or unset: the whole test set), got {self.test_size!r}"
            )
        if not self.host_cache_gib >= 0:
            raise ValueError(f"host_cache_gib must be >= 0 (GiB of host memory), got {self.host_cache_gib!r}")


@dataclass(frozen=True)
class SupernetConfig:
    """Supernet training (the paper's recipe in the imagenet preset, docs/design.md §2-3)."""

    epochs: int = 120
    batch_size: int = 1024  # global batch, split across ranks
    lr: float = 0.5  # annealed linearly to 0, per step (SPOS)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5  # weights with more than one dimension only (SPOS)
    label_smoothing: float = 0.1
    flops_band: tuple[float, float] | None = None  # MACs band for path sampling (None: unconstrained)
    grad_clip: float = 0.0  # 0: off
    checkpoint_steps: int = 0  # 0: checkpoint at epoch ends only
    max_steps_per_epoch: int = 0  # 0: the whole epoch (tests and smoke runs cap it)
    # training-set fraction per epoch of a one-path-per-step method; one training m paths per step sees 1/m of it
    # (EnNAS, the paper's fair-cost rule: Method.paths_per_step); below 1, each epoch draws its own random part
    fraction: float = 1.0
    # micro-batches per optimiser step: each rank runs batch_size / (world size x accumulate) images at a time and
    # sums their gradients, so the global batch (and the update) is the same on 1 or 8 GPUs
    accumulate: int = 1
    # 0-based epochs after which the weights are kept as snapshots/supernet_epoch{E}.pt (ranking fidelity over
    # training, benchmark.fidelity); () for none
    snapshot_epochs: tuple[int, ...] = ()
    # how candidates share weights (spaces.shared): "none" (SPOS: each its own), "expand" (e3/e6 of one kernel
    # are slices of tied weights), "expand+kernel" (all expanded MBConvs of a layer, smaller kernels as centres)
    sharing: str = "none"


@dataclass(frozen=True)
class DistillConfig:
    """What every distilling method shares, so their curves compare like with like: KD start and the probes."""

    start_epoch: int = 20  # paper: KD from epoch 20 of 120 (EnNAS and Cream)
    probe_images: int = 2000  # search-split images for teacher/student measurements
    probe_fit_images: int | None = None  # of those, the ones ensemble weights are fitted on (None: half)
    probe_sets: int = 100  # subnet sets (teachers) measured per probed epoch (paper §4.2)
    # Probe every k-th supernet epoch (0, k, 2k, ...) and always the last, which the claims read: the probes are
    # instrumentation for Fig. 1 and the gap, and on the proxy every epoch's probes cost as much as its training.
    probe_every: int = 1


@dataclass(frozen=True)
class SearchConfig(EvolutionConfig):
    """Evolution search (SPOS's settings, from EvolutionConfig) and how candidates are scored."""

    flops_budget: float | None = None  # MACs, hard upper bound; None: the space's default (ennas.core.context)
    eval_images: int = 8000  # fixed subset of the search split scoring each candidate (SPOS: 8,000)
    recal_batches: int = 200  # BN recalibration batches (SPOS: 200 x 128)
    recal_batch_size: int = 128
    eval_batch_size: int = 256
    random_baseline: bool = True  # also run random search with the same number of evaluations


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining the found architecture from scratch (the paper: 500 epochs, RMSProp)."""

    epochs: int = 500
    batch_size: int = 1024
    optimizer: str = "rmsproptf"  # timm's RMSpropTF, eps 1e-3, momentum 0.9 (Cream/DNA/EfficientNet)
    lr: float = 0.064
    weight_decay: float = 1e-5
    momentum: float = 0.9
    warmup_epochs: int = 3
    warmup_lr: float = 1e-6
    lr_decay: float = 0.97  # step decay per `decay_epochs` (EfficientNet recipe); 0: cosine
    decay_epochs: float = 2.4
    ema_decay: float = 0.9999  # 0: no EMA
    label_smoothing: float = 0.1
    dropout: float = 0.2
    max_steps_per_epoch: int = 0
    accumulate: int = 1  # micro-batches per optimiser step (as supernet.accumulate)
    # Retraining seeds of the found architecture: the run's top-1 is their mean (each kept in final.json). Seed 0
    # is the run's own retraining stream; seed k > 0 draws initialisation and data order from stream (retrain, k).
    seeds: int = 1


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, resolved once."""

    method: str = "spos"
    space: str = "s1"
    scale: str = "imagenet"
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    channels_last: bool = True
    threads: int = 0  # torch CPU threads; 0: torch's default
    progress: bool = True
    # mixed precision of training and scoring: auto (bf16 on a GPU that supports it, else off), bf16, fp16 (with a
    # gradient scaler; GPU only) or off (fp32). The ensemble solve always runs in float64.
    amp: str = "auto"
    keep_checkpoints: bool = False  # keep the *_checkpoint.pt files when a run completes (removed by default)
    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    sections: Mapping[str, Any] = field(default_factory=dict)  # each method's options, by section name

    def options(self, section: str) -> Any:
        """A method's options section (a frozen dataclass registered with `register_options`)."""
        return self.sections[section]

    def to_dict(self) -> dict:
        """Plain JSON-able form (what config.json and checkpoints hold): method sections at the top level."""
        values = dataclasses.asdict(self)
        values.update(values.pop("sections"))
        return values


SECTIONS: dict[str, type] = {}  # method options sections, filled by the method registry


def register_options(name: str, options: type) -> None:
    """Make `options` (a frozen dataclass) the config section `name`, e.g. `--set ennas.beta=0`."""
    core = {f.name for f in fields(RunConfig)}
    if name in core or SECTIONS.get(name, options) is not options:
        raise ValueError(f"config section {name!r} is taken")
    SECTIONS[name] = options


def with_sections(cfg: RunConfig) -> RunConfig:
    """`cfg` holding every registered section (defaults where it has none yet)."""
    sections = {name: cfg.sections.get(name) or cls() for name, cls in sorted(SECTIONS.items())}
    return dataclasses.replace(cfg, sections=sections)


def _coerce(value: Any, example: Any, key: str) -> Any:
    """Turn an override string (or JSON value) into the type of the field it sets."""
    if isinstance(value, str) and not isinstance(example, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            if example is not None:
                raise ConfigError(f"--set {key}: cannot read {value!r} as {type(example).__name__}") from None
    if isinstance(example, bool) and not isinstance(value, bool):
        raise ConfigError(f"--set {key}: expected true or false, got {value!r}")
    if isinstance(example, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(example, int) and not isinstance(example, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is not None and example is not None and not isinstance(example, tuple | list):
        if not isinstance(value, type(example)):
            raise ConfigError(f"--set {key}: expected {type(example).__name__}, got {value!r}")
    if isinstance(value, list):
        value = tuple(value)
    return value


def _json_or_text(value: Any) -> Any:
    """An override string as the JSON value it spells (`32` -> 32, `true` -> True), else the string itself."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _apply(obj: Any, updates: dict, prefix: str = "") -> Any:
    """A copy of dataclass `obj` with nested `updates` applied; unknown keys fail with the known ones."""
    known = {f.name: f for f in fields(obj) if f.name != "sections"}
    sections = dict(getattr(obj, "sections", None) or {}) if isinstance(obj, RunConfig) else None
    changes = {}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if sections is not None and key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"setting {path!r} is a section; set one of its keys, e.g. {path}.<key>")
            sections[key] = _apply(sections[key], value, f"{path}.")
            continue
        if key not in known:
            names = ", ".join([*known, *(sections or {})])
            raise ConfigError(f"unknown setting {path!r}; known in this section: {names}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"setting {path!r} is a section; set one of its keys, e.g. {path}.{fields(current)[0].name}"
                )
            changes[key] = _apply(current, value, f"{path}.")
        elif key == "options":  # a dataset builder's own options: --set strings read as JSON where they parse
            changes[key] = (
                {**current, **{k: _json_or_text(v) for k, v in value.items()}} if isinstance(value, dict) else value
            )
        else:
            changes[key] = _coerce(value, current, path)
    if sections is not None:
        changes["sections"] = sections
    try:
        return dataclasses.replace(obj, **changes)
    except ValueError as err:  # a section's own checks (e.g. EvolutionConfig's)
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from None


def parse_overrides(items: list[str]) -> dict:
    """`["supernet.lr=0.1", "seed=3"]` -> nested dict; each item needs one '='."""
    nested: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def resolve(preset: dict, overrides: dict | None = None, **top: Any) -> RunConfig:
    """Preset values + top-level arguments (method, space, seed, ...) + nested overrides -> validated RunConfig."""
    cfg = _apply(with_sections(RunConfig()), preset)
    cfg = _apply(cfg, {k: v for k, v in top.items() if v is not None})
    cfg = _apply(cfg, overrides or {})
    validate(cfg)
    return cfg


def from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig from its `to_dict` form (config.json, checkpoints)."""
    return _apply(with_sections(RunConfig()), values)


def validate(cfg: RunConfig) -> None:
    """Every cross-field rule in one place; raises ConfigError naming the setting."""
    fraction = cfg.supernet.fraction
    checks = [
        (cfg.scale in SCALES, f"scale must be one of {', '.join(SCALES)}, got {cfg.scale!r}"),
        (cfg.supernet.epochs >= 1, "supernet.epochs must be >= 1"),
        (cfg.supernet.batch_size >= 1, "supernet.batch_size must be >= 1"),
        (cfg.supernet.lr > 0, "supernet.lr must be > 0"),
        (0 < fraction <= 1 and abs(round(1 / fraction) * fraction - 1) < 1e-6, "supernet.fraction must be 1/k, k >= 1"),
        (
            all(isinstance(e, int) and 0 <= e < cfg.supernet.epochs for e in cfg.supernet.snapshot_epochs),
            f"supernet.snapshot_epochs must be 0-based epochs below supernet.epochs = {cfg.supernet.epochs}",
        ),
        (cfg.search.flops_budget is None or cfg.search.flops_budget > 0, "search.flops_budget must be > 0 (MACs)"),
        (cfg.retrain.epochs >= 0, "retrain.epochs must be >= 0"),
        (cfg.retrain.optimizer in ("rmsproptf", "sgd"), "retrain.optimizer must be rmsproptf or sgd"),
        (cfg.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda"),
        (cfg.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto, bf16, fp16 or off, got {cfg.amp!r}"),
        (cfg.supernet.accumulate >= 1, "supernet.accumulate must be >= 1"),
        (cfg.supernet.sharing in SHARING, f"supernet.sharing must be one of {', '.join(SHARING)}"),
        (cfg.retrain.accumulate >= 1, "retrain.accumulate must be >= 1"),
        (cfg.retrain.seeds >= 1, "retrain.seeds must be >= 1"),
        (cfg.distill.probe_every >= 1, "distill.probe_every must be >= 1"),
    ]
    band = cfg.supernet.flops_band
    if band is not None:
        checks.append((len(band) == 2 and band[0] < band[1], "supernet.flops_band must be [low, high] with low < high"))
    for name, section in cfg.sections.items():
        checks += [(ok, f"{name}.{message}") for ok, message in section.checks()]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
