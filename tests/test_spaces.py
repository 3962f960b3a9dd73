"""Every registered space at both scales: forward/backward, path-exact gradients, extract, strings, FLOPs."""

import functools

import numpy as np
import pytest
import torch

from spaces.arch import decode, describe, encode, sample_arch
from spaces.flops import FlopsTable, count_macs, count_params
from spaces.registry import DNA_WIDTHS, SCALES, get_space, list_spaces
from spaces.supernet import SuperNet, build_network

# DNA's width variants differ from `dna` in two stage widths only (and not at all at proxy scale); at ~5 s a case
# they stay out of these tests, and tests/test_published.py extracts and counts them against timm's builds.
WIDTH_VARIANTS = set(DNA_WIDTHS) - {"dna"}
CASES = [(name, scale) for name in list_spaces() if name not in WIDTH_VARIANTS for scale in SCALES]


def shape_of(scale):
    """Tiny inputs: proxy spaces take 1x28x28 images; ImageNet-scale layouts run at 32 px to stay fast."""
    return (1, 28, 10) if scale == "proxy" else (3, 32, 1000)


@functools.cache
def supernet(name, scale):
    torch.manual_seed(0)
    chans, _, classes = shape_of(scale)
    return SuperNet(get_space(name, scale), classes, chans)


def random_archs(space, count, seed=0):
    rng = np.random.default_rng(seed)
    fixed = [tuple(0 for _ in space.layers), tuple(n - 1 for n in space.num_choices)]
    return fixed + [sample_arch(space, rng) for _ in range(count)]


@pytest.mark.parametrize("name,scale", CASES)
def test_forward_backward_grads_reach_exactly_the_path(name, scale):
    net = supernet(name, scale).train()
    chans, res, classes = shape_of(scale)
    x = torch.randn(2, chans, res, res)
    for arch in random_archs(net.space, 2, seed=1):
        net.zero_grad(set_to_none=True)
        out = net(x, arch)
        assert out.shape == (2, classes)
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        on_path = {id(p) for m in net.path_modules(arch) for p in m.parameters()}
        for pname, p in net.named_parameters():
            if id(p) in on_path:
                assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            else:
                assert p.grad is None, f"{pname} is off the path {encode(arch)} but got a gradient"


@pytest.mark.parametrize("name,scale", CASES)
def test_extract_equals_supernet_path_in_eval_mode(name, scale):
    net = supernet(name, scale)
    chans, res, _ = shape_of(scale)
    torch.manual_seed(1)
    x = torch.randn(4, chans, res, res)
    for arch in random_archs(net.space, 2, seed=2):
        net.train()
        with torch.no_grad():  # give the path's BN layers non-trivial running statistics
            for _ in range(2):
                net(torch.randn(4, chans, res, res) * 2 + 0.5, arch)
        net.eval()
        sub = net.extract(arch).eval()
        with torch.no_grad():
            diff = (sub(x) - net(x, arch)).abs().max().item()
        assert diff < 1e-5
        assert not any(p is q for p in sub.parameters() for q in net.parameters()), "extract must copy weights"


@pytest.mark.parametrize("name,scale", CASES)
def test_string_round_trip(name, scale):
    space = get_space(name, scale)
    for arch in random_archs(space, 5, seed=3):
        assert decode(space, encode(arch)) == arch
        assert decode(space, describe(space, arch)) == arch
        assert decode(space, list(arch)) == arch


def test_decode_rejects_bad_architectures():
    space = get_space("s1", "proxy")
    with pytest.raises(ValueError, match="8 layers"):
        decode(space, "0-1-2")
    with pytest.raises(ValueError, match="choices 0..8"):
        decode(space, "9-0-0-0-0-0-0-0")  # the first layer strides: no identity, 9 choices
    with pytest.raises(ValueError, match="not a choice"):
        decode(space, "k9e9-0-0-0-0-0-0-0")
    known = "cream, dna, dna_w96_160, dna_w96_192, s1, s2, s3, spos"  # the dna spaces hold DNA's published networks
    with pytest.raises(ValueError, match=f"unknown search space 'nope'; known: {known}"):
        get_space("nope")


@pytest.mark.parametrize("name,scale", CASES)
def test_lookup_table_equals_fvcore_on_extracted_network(name, scale):
    space = get_space(name, scale)
    chans, _, classes = shape_of(scale)
    res = space.resolution if scale == "proxy" else 64  # a full-size 224 px count adds seconds, not coverage
    table = FlopsTable(space, res, classes, chans)
    for arch in random_archs(space, 3, seed=4):
        net = build_network(space, arch, classes, chans)
        assert table.flops(arch) == count_macs(net, torch.zeros(1, chans, res, res))
        assert table.params(arch) == count_params(net)


def test_identity_only_where_shape_is_kept():
    for name in ("s1", "s2", "s3"):
        for scale in SCALES:
            for layer in get_space(name, scale).layers:
                has_id = "id" in layer.choice_names
                assert has_id == (layer.stride == 1 and layer.in_chs == layer.out_chs)


def test_space_sizes():
    assert get_space("spos").num_architectures == 4**20
    assert get_space("cream").num_architectures == 6**5 * 7**15  # a stage's layers after its first may be skipped
    assert get_space("dna").num_architectures == 6**6 * 7**15  # 21 layers: 6 stage openers, 15 skippable
    s1 = get_space("s1")
    assert s1.num_architectures == 9**5 * 10**15  # first layer of each of 5 stages strides or widens
    assert len(get_space("s3").layers) == 30


def test_hand_computed_flops_of_smallest_mbconv_path():
    """s1 proxy, every layer k3e1 (no expansion conv): MACs = H*W*Cout*Cin/groups*k*k per conv, in*out linear."""
    space = get_space("s1", "proxy")
    arch = tuple(0 for _ in space.layers)
    stem = 14 * 14 * 16 * 1 * 9  # stride 2: 28 -> 14
    ds = 14 * 14 * 16 * 9 + 14 * 14 * 16 * 24
    # (dw at output resolution, pointwise project) per layer: 24->40 s2, 40 x3 at 7x7; 40->64 s2, 64 x3 at 4x4
    layers = [7 * 7 * 24 * 9 + 7 * 7 * 24 * 40] + [7 * 7 * 40 * 9 + 7 * 7 * 40 * 40] * 3
    layers += [4 * 4 * 40 * 9 + 4 * 4 * 40 * 64] + [4 * 4 * 64 * 9 + 4 * 4 * 64 * 64] * 3
    tail = 4 * 4 * 64 * 96 + 4 * 4 * 96 * 192 + 192 * 10
    assert FlopsTable(space, 28, 10, 1).flops(arch) == stem + ds + sum(layers) + tail == 1_143_568


def test_sample_arch_within_flops_band_and_impossible_band():
    space = get_space("s1", "proxy")
    table = FlopsTable(space, 28, 10, 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = sample_arch(space, rng, table.flops, (3e6, 5e6))
        assert 3e6 <= table.flops(arch) <= 5e6
    low, _ = table.bounds()
    with pytest.raises(ValueError, match="no architecture"):
        sample_arch(space, rng, table.flops, (0, low - 1))
