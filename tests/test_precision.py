"""Mixed precision and gradient accumulation: the same update from k micro-batches as from one batch, bf16
autocast on CPU runs every method's smoke pipeline without NaN, and bad settings are one line."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import SMOKE_ARGS

from benchmark.run import main as run_main
from ennas.core.config import ConfigError
from ennas.core.io import read_json, read_jsonl
from ennas.core.loop import EpochPlan, build_loop, check_batch, train_step
from ennas.core.precision import amp_dtype
from ennas.core.retrain import PlainTraining
from spaces.registry import get_space
from spaces.supernet import SuperNet


class OnePath(torch.nn.Module):
    """One fixed path of the supernet as a plain network (what PlainTraining calls)."""

    def __init__(self, net: SuperNet, arch: tuple[int, ...]):
        super().__init__()
        self.net, self.arch = net, arch

    def forward(self, x):
        return self.net(x, self.arch)


def one_update(accumulate: int) -> dict[str, torch.Tensor]:
    """The supernet's parameters after one SGD step on a fixed batch, taken in `accumulate` micro-batches."""
    torch.manual_seed(0)
    model = OnePath(SuperNet(get_space("s1", "proxy"), 10, 1), (1, 2, 3, 0, 4, 5, 6, 1)).eval()  # BN in eval
    data = torch.utils.data.TensorDataset(torch.zeros(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))
    plan = EpochPlan(data, batch_size=16, epochs=1, stream="supernet", accumulate=accumulate)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

    def constant(opt, steps):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)

    loop = build_loop("supernet", model, PlainTraining(0.0, None), optimizer, plan, constant)
    cfg = SimpleNamespace(seed=0, amp="off", channels_last=False)
    data = SimpleNamespace(to_device=lambda x, device: x.to(device))  # the batch is already a float tensor
    ctx = SimpleNamespace(device=torch.device("cpu"), cfg=cfg, data=data)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    stats = train_step(ctx, loop, x, y, epoch=0, step=0)
    assert stats["count"] == 16 and math.isfinite(stats["loss_sum"])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_k_micro_batches_give_the_update_of_one_batch():
    whole = one_update(1)
    torch.manual_seed(0)
    fresh = SuperNet(get_space("s1", "proxy"), 10, 1).state_dict()
    assert any(not torch.equal(fresh[n.removeprefix("net.")], v) for n, v in whole.items()), "the step moved nothing"
    for k in (2, 4):
        split = one_update(k)
        for name, value in whole.items():
            torch.testing.assert_close(split[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_global_batch_that_does_not_divide_is_one_line():
    data = torch.utils.data.TensorDataset(torch.zeros(30, 1), torch.zeros(30))
    with pytest.raises(ConfigError, match=r"global batch 10 does not divide into 1 rank\(s\) x 3 micro-batch"):
        check_batch(EpochPlan(data, batch_size=10, epochs=1, stream="supernet", accumulate=3), "supernet")
    check_batch(EpochPlan(data, batch_size=12, epochs=1, stream="supernet", accumulate=3), "supernet")


def test_amp_settings_resolve_per_device():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="amp=fp16 needs a CUDA GPU"):
        amp_dtype("fp16", cpu)
    assert run_main(["--method", "spos", "--preset", "smoke", "--set", "amp=fp32"]) == 2


# One run per trainer: ennas-wo-ds and ennas-beta0 train with ennas' trainer and differ only in the sampler,
# which autocast does not touch.
@pytest.mark.parametrize("method", ["spos", "cream", "dna", "ennas"])
def test_bf16_autocast_runs_every_trainer_on_cpu_without_nan(method, tmp_path):
    out = tmp_path / "run"
    # 512 test images rather than 10 000: the check is a finite accuracy, and without native bf16 (no AMX or
    # avx512_bf16) the full test pass was most of each case's three minutes.
    quick = ("retrain.epochs=1", "search.generations=0", "search.random_baseline=false", "data.test_size=512")
    short = [f"--set={k}" for k in (*quick, "amp=bf16")]
    assert run_main(["--method", method, *SMOKE_ARGS, *short, "--run-dir", str(out)]) == 0
    final = read_json(out / "final.json")
    assert math.isfinite(final["top1"]) and final["top1"] > 0
    assert all(math.isfinite(r["loss"]) for r in read_jsonl(out / "train_log.jsonl"))
    config = read_json(out / "config.json")
    assert config["amp"] == "bf16" and config["data"]["test_size"] == 512
