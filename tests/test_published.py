"""Published Cream and DNA networks: our reference spaces hold them exactly, and their figures are explained.

The independent builds start from the official definitions (Cream's arch_list and supernet template as
`Cream/tools/retrain.py` + `childnet.py` turn them into block strings; DNA's block strings from
`retraining/model.py`) and go through timm's own builders: `MobileNetV3` (Cream's ChildNet: head conv after
the pool, SE from the expanded width rounded to 8, ReLU and hard sigmoid) and `EfficientNet` (DNA's
GenEfficientNet: stem 32, head before the pool, SE from the block input, Swish and sigmoid).
"""

import functools

import pytest
import torch
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from torch import nn

from benchmark.arch import main, published_report
from spaces.arch import decode, describe, encode
from spaces.flops import count_macs, count_params
from spaces.published import PUBLISHED, counter_extras
from spaces.registry import get_space
from spaces.supernet import SuperNet

# Cream: the supernet template's block per stage, the (kernel, expansion) of each choice index, and arch_lists
CREAM_TEMPLATE = ("ir_r1_k3_s2_e4_c24", "ir_r1_k5_s2_e4_c40", "ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e6_c96")
CREAM_TEMPLATE += ("ir_r1_k3_s2_e6_c192",)
CREAM_CHOICES = [(k, e) for k in (3, 5, 7) for e in (4, 6)]
CREAM_ARCH_LISTS = {
    "cream-14": [[0], [3], [3, 3], [3, 3], [3], [3], [0]],
    "cream-43": [[0], [3], [3, 1], [3, 1], [3, 3, 3], [3, 3], [0]],
    "cream-114": [[0], [3], [3, 3], [3, 3], [3, 3, 3], [3, 3], [0]],
    "cream-287": [[0], [3], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3], [0]],
    "cream-481": [[0], [3, 4, 3, 1], [3, 2, 3, 0], [3, 3, 3, 1], [3, 3, 3, 3], [3, 3, 3, 3], [0]],
}
# DNA's block strings (SE 0.25 on every block, left out here and added below)
DNA_STRINGS = {
    "dna-a": [
        ["ds_r1_k3_s1_c16"],
        ["ir_r1_k5_s2_e3_c24", "ir_r1_k3_s1_e3_c24", "ir_r1_k3_s1_e6_c24"],
        ["ir_r2_k3_s2_e3_c40", "ir_r1_k5_s1_e3_c40", "ir_r1_k3_s1_e6_c40"],
        ["ir_r1_k7_s2_e6_c80", "ir_r1_k3_s1_e3_c80", "ir_r1_k5_s1_e3_c80", "ir_r1_k3_s1_e6_c80"],
        ["ir_r1_k5_s1_e6_c96", "ir_r2_k5_s1_e3_c96", "ir_r1_k5_s1_e6_c96"],
        ["ir_r1_k5_s2_e6_c160", "ir_r3_k5_s1_e3_c160", "ir_r1_k5_s1_e6_c160"],
        ["ir_r1_k3_s1_e6_c320"],
    ],
    "dna-b": [
        ["ds_r1_k3_s1_c16"],
        ["ir_r1_k3_s2_e3_c24", "ir_r1_k5_s1_e3_c24", "ir_r1_k7_s1_e6_c24"],
        ["ir_r1_k7_s2_e6_c40", "ir_r1_k5_s1_e3_c40", "ir_r1_k7_s1_e6_c40"],
        ["ir_r1_k5_s2_e6_c80", "ir_r2_k5_s1_e3_c80", "ir_r1_k3_s1_e6_c80"],
        ["ir_r1_k5_s1_e6_c96", "ir_r2_k5_s1_e3_c96", "ir_r1_k5_s1_e6_c96"],
        ["ir_r1_k7_s2_e6_c192", "ir_r3_k5_s1_e3_c192", "ir_r1_k7_s1_e6_c192"],
        ["ir_r1_k3_s1_e6_c320"],
    ],
    "dna-c": [
        ["ds_r1_k3_s1_c16"],
        ["ir_r1_k5_s2_e6_c24", "ir_r1_k3_s1_e6_c24"],
        ["ir_r2_k5_s2_e6_c40", "ir_r1_k3_s1_e6_c40", "ir_r1_k5_s1_e6_c40"],
        ["ir_r1_k5_s2_e6_c80", "ir_r1_k3_s1_e6_c80", "ir_r2_k5_s1_e6_c80"],
        ["ir_r1_k3_s1_e6_c112", "ir_r2_k5_s1_e6_c112", "ir_r1_k5_s1_e3_c112"],
        ["ir_r1_k5_s2_e6_c192", "ir_r1_k5_s1_e3_c192", "ir_r2_k5_s1_e6_c192"],
        ["ir_r1_k3_s1_e6_c320"],
    ],
    "dna-d": [
        ["ds_r1_k3_s1_c16"],
        ["ir_r1_k7_s2_e6_c24", "ir_r1_k5_s1_e6_c24", "ir_r1_k7_s1_e6_c24"],
        ["ir_r4_k7_s2_e6_c40"],
        ["ir_r1_k7_s2_e6_c80", "ir_r2_k5_s1_e6_c80", "ir_r1_k7_s1_e6_c80"],
        ["ir_r1_k7_s1_e6_c112", "ir_r1_k5_s1_e6_c112", "ir_r1_k7_s1_e6_c112", "ir_r1_k5_s1_e6_c112"],
        ["ir_r1_k7_s2_e6_c192", "ir_r3_k5_s1_e6_c192", "ir_r1_k7_s1_e6_c192"],
        ["ir_r1_k3_s1_e6_c320"],
    ],
}


def cream_strings(arch_list: list[list[int]]) -> list[list[str]]:
    """childnet.py's rule: each choice sets k and e of the stage's template; a one-block stage keeps the template."""
    stages = [["ds_r1_k3_s1_e1_c16_se0.25"]]
    for template, choices in zip(CREAM_TEMPLATE, arch_list[1:-1], strict=True):
        if len(choices) == 1:
            stages.append([template + "_se0.25"])
            continue
        blocks = []
        for choice in choices:
            kind, repeat, _, stride, _, chs = template.split("_")
            kernel, expand = CREAM_CHOICES[choice]
            blocks.append(f"{kind}_{repeat}_k{kernel}_{stride}_e{expand}_{chs}_se0.25")
        stages.append(blocks)
    return stages + [["cn_r1_k1_s1_c320"]]


def official_model(name: str) -> nn.Module:
    """The published network built by timm from the official definition, in eval mode."""
    if name.startswith("cream"):
        se = functools.partial(
            SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels
        )
        blocks = decode_arch_def(cream_strings(CREAM_ARCH_LISTS[name]))
        kwargs = {"stem_size": 16, "head_bias": True, "head_norm": False, "se_layer": se, "se_from_exp": True}
        return MobileNetV3(blocks, num_classes=1000, num_features=1280, act_layer=nn.SiLU, **kwargs).eval()
    blocks = decode_arch_def([[s + "_se0.25" for s in stage] for stage in DNA_STRINGS[name]])
    return EfficientNet(blocks, num_classes=1000, stem_size=32, num_features=1280, act_layer=nn.SiLU).eval()


@functools.cache
def supernet(space_name: str) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(get_space(space_name), 1000)


def ours(name: str) -> nn.Module:
    """The published network extracted from our reference space's supernet."""
    entry = PUBLISHED[name]
    return supernet(entry.space).extract(decode(get_space(entry.space), entry.arch)).eval()


def layer_list(net: nn.Module, resolution: int) -> list[tuple]:
    """Conv, BN and linear layers in the order one forward runs them, with shapes, strides, groups and outputs."""
    rows: list[tuple] = []

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            rows.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups))
            rows[-1] += (m.bias is not None, tuple(out.shape))
        elif isinstance(m, nn.BatchNorm2d):
            rows.append(("bn", m.num_features, m.affine))
        elif isinstance(m, nn.Linear):
            rows.append(("linear", m.in_features, m.out_features, m.bias is not None))

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, 3, resolution, resolution))
    for handle in handles:
        handle.remove()
    return rows


@functools.cache
def official_counts(name: str) -> dict:
    """Layers, MACs (our convention), params and counter extras of the official build, at its resolution."""
    res = PUBLISHED[name].resolution
    net = official_model(name)
    macs = count_macs(net, torch.zeros(1, 3, res, res))
    return {
        "layers": layer_list(net, res),
        "macs": macs,
        "params": count_params(net),
        "extras": counter_extras(net, res),
    }


def within(value: float, published: float, tol: float = 0.02) -> bool:
    return abs(value / published - 1) <= tol


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_extract_equals_the_official_network_layer_for_layer(name):
    """Same convs (shapes, kernels, strides, padding, groups, bias, output size), BNs and linear: same network."""
    res, official = PUBLISHED[name].resolution, official_counts(name)
    net = ours(name)
    assert layer_list(net, res) == official["layers"]
    assert count_params(net) == official["params"]
    assert count_macs(net, torch.zeros(1, 3, res, res)) == official["macs"]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_figures_are_reproduced_or_the_difference_is_stated(name):
    """`matches` names the count within 2 % of the published MACs; an entry matching neither must say so."""
    entry, counts = PUBLISHED[name], official_counts(name)
    macs_m, with_extras_m = counts["macs"] / 1e6, (counts["macs"] + counts["extras"]) / 1e6
    close = {"conv+linear": within(macs_m, entry.macs_m), "counter": within(with_extras_m, entry.macs_m)}
    if entry.matches:
        assert close[entry.matches], (name, macs_m, with_extras_m, entry.macs_m)
    else:
        assert not any(close.values()) and entry.note.startswith("Not reproduced")
    if entry.params_m is not None:
        assert within(counts["params"] / 1e6, entry.params_m)


def test_dna_counter_conventions_reproduce_dna_a_c_d_to_a_fifth_of_a_million():
    """DNA's counter (conv + BatchNorm x2 + biases; pooling adds 0.06 M) gives the README's 348 / 466 / 611 M."""
    for name in ("dna-a", "dna-c", "dna-d"):
        counts = official_counts(name)
        assert abs((counts["macs"] + counts["extras"]) / 1e6 - PUBLISHED[name].macs_m) < 0.2, name


def test_architecture_strings_round_trip_and_skips_only_keep_shape():
    for entry in PUBLISHED.values():
        space = get_space(entry.space)
        arch = decode(space, entry.arch)
        assert describe(space, arch) == entry.arch and decode(space, encode(arch)) == arch
    for name in ("cream", "dna", "dna_w96_160", "dna_w96_192"):
        for layer in get_space(name).layers:
            assert ("id" in layer.choice_names) == (layer.stride == 1 and layer.in_chs == layer.out_chs)


def test_cream_keeps_its_old_choice_indices():
    """Skips were appended after the six operations, so an architecture written before still decodes the same."""
    space = get_space("cream")
    assert all(layer.choice_names[:6] == ("k3e4", "k3e6", "k5e4", "k5e6", "k7e4", "k7e6") for layer in space.layers)
    assert decode(space, "-".join(["3"] * 20)) == (3,) * 20


def test_cli_prints_published_networks_by_name(capsys):
    """What `benchmark.arch` prints (from the lookup table) is the count of the independently built network."""
    for name, header, published in (
        ("cream-287", "cream/imagenet at 224 px", "published cream-287: 287 M MACs by thop"),
        ("dna-a", "dna_w96_160/imagenet at 224 px", "published dna-a: 348 M MACs"),  # --space dna: DNA-a's widths
    ):
        assert main(["--space", PUBLISHED[name].family, "--arch", name]) == 0
        out, counts = capsys.readouterr().out, official_counts(name)
        assert header in out and published in out
        assert f"{counts['macs'] / 1e6:.2f} MFLOPs (MACs)  {counts['params'] / 1e6:.3f} M params" in out
        assert f"counts them {(counts['macs'] + counts['extras']) / 1e6:.2f} M" in out
    entry = PUBLISHED["cream-287"]  # at another resolution the published figures are shown without a comparison
    assert published_report(entry, get_space("cream"), (), 160, 1000, 0, 0)["comparable"] is False


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--space", "cream", "--arch", "dna-a"], "dna-a is a network of space dna_w96_160, not cream; published: "),
        (["--space", "dna", "--arch", "dna-z"], "or name a published network: cream-14 (cream), "),
        (["--space", "cream", "--scale", "proxy", "--arch", "cream-287"], "cream-287 is an ImageNet network"),
    ],
)
def test_cli_rejects_other_spaces_and_unknown_names_in_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    if "published" in message:
        assert all(name in err for name in PUBLISHED)
