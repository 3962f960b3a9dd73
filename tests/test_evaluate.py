"""BN recalibration, batch-statistics probing and top-k counting."""

import torch
from torch import nn

from ennas.core.evaluate import batch_statistics, evaluate, recalibrate_bn, score_path, topk_correct
from spaces.registry import get_space
from spaces.supernet import SuperNet


def toy_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_recalibrate_bn_estimates_the_data_statistics_and_restores_mode():
    net = toy_net().eval()
    batches = [(torch.randn(32, 1, 4, 4) * 3 + 2, torch.zeros(32, dtype=torch.long)) for _ in range(8)]
    recalibrate_bn(net, batches, batches=None)
    conv_out = torch.cat([net[0](x) for x, _ in batches])
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    # cumulative average of per-batch unbiased variances: close to the pooled variance
    torch.testing.assert_close(bn.running_var, conv_out.var((0, 2, 3)), rtol=0.05, atol=1e-3)
    assert not net.training and bn.momentum == 0.1


def test_recalibrate_bn_respects_the_batch_limit():
    net = toy_net()
    first = [(torch.randn(16, 1, 4, 4), torch.zeros(16, dtype=torch.long))]
    later = [(torch.randn(16, 1, 4, 4) + 100, torch.zeros(16, dtype=torch.long))]
    recalibrate_bn(net, first + later, batches=1)
    assert net[1].running_mean.abs().max() < 10


def test_batch_statistics_leave_stored_statistics_untouched():
    net = toy_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad(), batch_statistics(net.eval()):
        assert net[1].training
        net(torch.randn(8, 1, 4, 4) + 5)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 2, 0]), (1, 2)) == [1, 2]
    assert topk_correct(logits, torch.tensor([1, 2, 0]), (1, 5)) == [1, 3]  # k capped at the class count


def test_score_path_has_no_side_effects_on_the_supernet():
    space = get_space("s1", "proxy")
    torch.manual_seed(0)
    net = SuperNet(space, 10, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(2)]
    score = score_path(net, tuple(0 for _ in space.layers), batches, batches)
    assert 0 <= score <= 100
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert evaluate(lambda x: torch.zeros(len(x), 10), batches)["top1"] >= 0
