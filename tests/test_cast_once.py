"""``shared.models.cast_once``: under autocast, a network's weights cast all at once, with
autocast's results bit for bit and a handful of casts where autocast launches one per weight
each way."""
import pytest
import torch
import torch.nn as nn

from bench.kernel_count import LaunchCount
from shared.genotypes import load_genotype
from shared.models.cast_once import cast_weights, forward_cast_once
from shared.models.cnn import build_final_network
from shared.runtime import Precision


def _train(precision: Precision, once: bool, steps: int = 3):
    torch.manual_seed(0)
    net = precision.prepare_model(
        build_final_network(load_genotype("DARTS_V2"), "cifar10", 4, 5, True))
    net.drop_path_prob = 0.1
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    cpu = torch.device("cpu")

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(cpu):
            logits, aux = forward_cast_once(net, x) if once else net(x)
            loss = (nn.functional.cross_entropy(logits, y)
                    + 0.4 * nn.functional.cross_entropy(aux, y))
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
        return loss.detach()

    losses = []
    for s in range(steps):
        g = torch.Generator().manual_seed(s)
        x = precision.prepare(torch.randn(4, 3, 32, 32, generator=g))
        losses.append(step(x, torch.randint(0, 10, (4,), generator=g)))
    with LaunchCount() as counter:
        step(x, torch.zeros(4, dtype=torch.long))
    return losses, net.state_dict(), counter.counts


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_same_training_bit_for_bit_with_a_few_casts(channels_last):
    """Three bf16 steps of DARTS_V2 (drop-path, auxiliary head; channels-last: the weights
    too), then the launches of a fourth: losses, weights and buffers as autocast's alone."""
    precision = Precision(amp=True, channels_last=channels_last)
    (losses, state, counts), (losses1, state1, counts1) = (_train(precision, False),
                                                           _train(precision, True))
    assert all(torch.equal(a, b) for a, b in zip(losses, losses1))
    assert state.keys() == state1.keys() and all(torch.equal(state[k], state1[k]) for k in state)
    assert counts["_to_copy"] > 150  # a cast of each of 87 weights each way
    assert counts1["_to_copy"] < 10


def test_views_keep_each_weight_layout_and_a_plain_call_outside_autocast():
    """Each cast weight has its weight's shape and strides (a channels-last depthwise kernel's
    size-1 dim's stride too); BN weights stay; outside autocast the call is the model's own."""
    net = build_final_network(load_genotype("DARTS_V2"), "cifar10", 4, 5, True)
    net = net.to(memory_format=torch.channels_last)
    params = dict(net.named_parameters())
    cast = cast_weights(net, torch.bfloat16)
    assert cast and all(v.dtype == torch.bfloat16 for v in cast.values())
    assert all(v.shape == params[k].shape and v.stride() == params[k].stride()
               for k, v in cast.items())
    assert all(torch.equal(v, params[k].bfloat16()) for k, v in cast.items())
    batch_norms = {f"{n}.weight" for n, m in net.named_modules()
                   if isinstance(m, nn.BatchNorm2d)}
    assert batch_norms and not batch_norms & set(cast)  # BN runs with its fp32 weights
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    assert torch.equal(forward_cast_once(net, x)[0], net(x)[0])
