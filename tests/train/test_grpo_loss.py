"""TRL's GRPO loss family against values computed by hand on small tensors: advantages with
each reward scaling, the clip binding below and above (the ratio of a second update, μ = 2),
DAPO's clip-higher, GSPO's sequence ratio, the k3 KL, and each loss type's reduction."""

from __future__ import annotations

import math

import pytest
import torch

from medvl.train.grpo_loss import group_advantages, grpo_loss, reduce_loss

LOG = math.log


def test_advantages_group_batch_none() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    std = math.sqrt(1 / 3)  # unbiased: 4 deviations of 0.5 over 3
    want = torch.tensor([[0.5, -0.5, -0.5, 0.5]]) / (std + 1e-4)
    assert torch.allclose(group_advantages(rewards, "group"), want)

    two = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    # Batch std of (1, 0, 3, 3): mean 1.75, squares 6.75 over 3 -> 1.5.
    want = torch.tensor([[0.5, -0.5], [0.0, 0.0]])
    assert torch.allclose(group_advantages(two, "batch"), want / 1.5001)
    assert torch.allclose(group_advantages(two, "none"), torch.tensor([[0.5, -0.5], [0.0, 0.0]]))
    # A group of equal rewards has advantages 0 whatever the scaling.
    assert not group_advantages(two, "group")[1].any()
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(two, "std")
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.ones(3), "group")


def _one_token(logp: float, old: float, adv: float, **kw):
    x = torch.tensor([[logp]], requires_grad=True)
    out = grpo_loss(x, torch.tensor([adv]), torch.ones(1, 1), old_logp=torch.tensor([[old]]), **kw)
    out.loss.sum().backward()
    return out, float(out.loss.detach()), float(x.grad)


@pytest.mark.parametrize(
    ("ratio", "adv", "loss", "grad", "low", "high"),
    [
        # The second update (μ = 2) has moved the token's probability 0.25 -> 0.5: ratio 2.
        (2.0, 1.0, -1.2, 0.0, 0, 1),  # min(2, 1.2): the clip binds above, no gradient
        (2.0, -1.0, 2.0, 2.0, 0, 0),  # min(-2, -1.2) = -2: unclipped, d/dlogp = -A * ratio
        (0.5, -1.0, 0.8, 0.0, 1, 0),  # min(-0.5, -0.8): the clip binds below
        (0.5, 1.0, -0.5, -0.5, 0, 0),  # min(0.5, 0.8) = 0.5: unclipped
        (1.0, 1.0, -1.0, -1.0, 0, 0),  # one update per batch: ratio 1, gradient -A
    ],
)
def test_clipped_surrogate_by_hand(ratio, adv, loss, grad, low, high) -> None:
    old = LOG(0.25)
    out, got_loss, got_grad = _one_token(old + LOG(ratio), old, adv, epsilon=0.2)
    assert got_loss == pytest.approx(loss, abs=1e-6)
    assert got_grad == pytest.approx(grad, abs=1e-6)
    assert (float(out.clipped_low), float(out.clipped_high)) == (low, high)


def test_clip_higher_differs_from_epsilon() -> None:
    old = LOG(0.4)
    ratio = 1.25
    # Symmetric clip at 0.2: 1.25 is cut to 1.2 and gives no gradient.
    out, loss, grad = _one_token(old + LOG(ratio), old, 1.0, epsilon=0.2)
    assert (loss, grad, float(out.clipped_high)) == (pytest.approx(-1.2), 0.0, 1.0)
    # DAPO's clip-higher (0.28) lets it through: loss -1.25, gradient -A * ratio.
    out, loss, grad = _one_token(old + LOG(ratio), old, 1.0, epsilon=0.2, epsilon_high=0.28)
    assert loss == pytest.approx(-1.25) and grad == pytest.approx(-1.25)
    assert float(out.clipped_high) == 0.0
    # The lower bound stays at 1 - epsilon.
    out, loss, _ = _one_token(old + LOG(0.7), old, -1.0, epsilon=0.2, epsilon_high=0.28)
    assert loss == pytest.approx(0.8) and float(out.clipped_low) == 1.0


def test_sequence_level_ratio_is_gspo() -> None:
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    logp = (old + torch.tensor([[0.1, 0.5, 3.0]])).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0]])  # the third token (padding) must not count
    out = grpo_loss(logp, torch.tensor([1.0]), mask, old_logp=old,
                    importance_sampling_level="sequence")  # fmt: skip
    # log w = mean(0.1, 0.5) = 0.3: w = 1.3499 > 1.2, clipped for both real tokens.
    assert torch.allclose(out.loss, torch.tensor([[-1.2, -1.2, 0.0]]))
    assert out.clipped_high.tolist() == [[1.0, 1.0, 0.0]]
    logp2 = (old + torch.tensor([[0.1, -0.1, 0.0]])).requires_grad_(True)
    out = grpo_loss(logp2, torch.tensor([1.0]), mask, old_logp=old,
                    importance_sampling_level="sequence")  # fmt: skip
    # log w = 0: w = 1 on both tokens; each token's loss -w has d/dlogp_t = -w / 2 per token,
    # summed over the two tokens' losses: -1 for each real token, 0 for padding.
    out.loss.sum().backward()
    assert torch.allclose(out.loss, torch.tensor([[-1.0, -1.0, 0.0]]))
    assert torch.allclose(logp2.grad, torch.tensor([[-1.0, -1.0, 0.0]]))


def test_kl_is_k3_and_needs_a_reference() -> None:
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]])
    mask = torch.tensor([[1, 0]])
    out = grpo_loss(logp, torch.zeros(1), mask, ref_logp=ref, beta=0.5)
    expected = math.exp(-0.5) + 0.5 - 1
    assert torch.allclose(out.kl, torch.tensor([[expected, 0.0]]))
    assert torch.allclose(out.loss, 0.5 * out.kl)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, torch.zeros(1), mask, beta=0.1)


def test_zero_advantages_give_zero_gradient() -> None:
    logp = torch.randn(4, 5, requires_grad=True)
    grpo_loss(logp, torch.zeros(4), torch.ones(4, 5)).loss.sum().backward()
    assert not logp.grad.any()


def test_reduce_loss_each_type() -> None:
    per_token = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    sizes = {"n_sequences": 2, "n_tokens": 3, "max_new_tokens": 3}
    # grpo: token means 3/2 and 3/1, then their mean.
    assert float(reduce_loss(per_token, mask, "grpo", **sizes)) == pytest.approx(2.25)
    assert float(reduce_loss(per_token, mask, "bnpo", **sizes)) == pytest.approx(6 / 3)
    assert float(reduce_loss(per_token, mask, "dr_grpo", **sizes)) == pytest.approx(6 / (2 * 3))
    assert float(reduce_loss(per_token, mask, "dapo", **sizes)) == pytest.approx(2.0)
    # dapo over 2 processes holding 12 tokens in all: each process divides by 12 / 2, and the
    # average of the processes' gradients is the global token mean.
    dapo = reduce_loss(per_token, mask, "dapo", **sizes, num_processes=2, global_tokens=12)
    assert float(dapo) == pytest.approx(1.0)
    # Groups' shares add up to the batch loss: two halves of the batch give the whole.
    halves = sum(float(reduce_loss(per_token[i : i + 1], mask[i : i + 1], "grpo", **sizes))
                 for i in range(2))  # fmt: skip
    assert halves == pytest.approx(2.25)
    with pytest.raises(ValueError, match="loss_type"):
        reduce_loss(per_token, mask, "ppo", **sizes)


def test_entropy_shaped_advantages_by_hand() -> None:
    from medvl.train.grpo_loss import entropy_shaped_advantages

    # Mean entropies 1 (confident) and 3 (hesitant; its padding token's 9 must not count):
    # z = -/+ 1 / (sqrt(2) + 1e-4), tanh(0.70706) = 0.60877.
    entropy = torch.tensor([[1.0, 1.0], [3.0, 9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    t = math.tanh(1 / (math.sqrt(2) + 1e-4))
    # A confident right answer is boosted less, a hesitant wrong one punished less:
    got = entropy_shaped_advantages(torch.tensor([1.0, -1.0]), entropy, mask, alpha=0.5)
    assert torch.allclose(got, torch.tensor([1 - 0.5 * t, -(1 - 0.5 * t)]))
    # ... a hesitant right answer boosted more, a confident wrong one punished more.
    got = entropy_shaped_advantages(torch.tensor([-1.0, 1.0]), entropy, mask, alpha=0.5)
    assert torch.allclose(got, torch.tensor([-(1 + 0.5 * t), 1 + 0.5 * t]))
    assert not entropy_shaped_advantages(torch.zeros(2), entropy, mask, alpha=0.9).any()
    assert torch.equal(entropy_shaped_advantages(torch.tensor([1.0, -1.0]), entropy, mask, 0.0),
                       torch.tensor([1.0, -1.0]))  # fmt: skip
    with pytest.raises(ValueError, match="alpha"):
        entropy_shaped_advantages(torch.ones(2), entropy, mask, alpha=1.0)
