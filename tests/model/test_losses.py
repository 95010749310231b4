import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from patchpack.model.losses import (
    LOSSES, contrastive_loss, flatten_slots, real_slots, sigmoid_loss, softmax_loss,
)
from patchpack.registry import RegistryError


def _pairs(n, k=6, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, k, generator=g, dtype=torch.float64), dim=-1).requires_grad_(requires_grad)
    y = F.normalize(torch.randn(n, k, generator=g, dtype=torch.float64), dim=-1).requires_grad_(requires_grad)
    return x, y


def test_sigmoid_loss_is_siglips_formula():
    """SigLIP §3.2 / Algorithm 1: -1/N sum_ij log 1 / (1 + exp(-z_ij (t x_i.y_j + b))), z_ij = +1 on pairs."""
    x, y = _pairs(3)
    t, b = 2.5, -1.3
    direct = 0.0
    for i in range(3):
        for j in range(3):
            z = 1.0 if i == j else -1.0
            logit = t * float(x[i] @ y[j]) + b
            direct += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    direct /= 3
    got = sigmoid_loss(x, y, torch.tensor(t, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got.item() == pytest.approx(direct, rel=1e-6)


def test_softmax_loss_is_clips_infonce():
    """SigLIP §3.1: -1/(2N) sum_i [log e^{t x_i.y_i} / sum_j e^{t x_i.y_j} + log e^{t x_i.y_i} / sum_j e^{t x_j.y_i}]."""
    x, y = _pairs(4, seed=1)
    t = 3.0
    direct = 0.0
    for i in range(4):
        pos = math.exp(t * float(x[i] @ y[i]))
        direct += math.log(pos / sum(math.exp(t * float(x[i] @ y[j])) for j in range(4)))
        direct += math.log(pos / sum(math.exp(t * float(x[j] @ y[i])) for j in range(4)))
    direct *= -1 / 8
    got = softmax_loss(x, y, torch.tensor(t, dtype=torch.float64))
    assert got.item() == pytest.approx(direct, rel=1e-6)


def test_siglip_initialisation_starts_near_the_prior():
    """With t = 10 and b = -10 (SigLIP's start), the many negatives cost little: the loss is ~log(1 + e^-10) * N
    for random embeddings, far below what b = 0 gives."""
    x, y = _pairs(64, k=32, seed=2)
    at_init = sigmoid_loss(x, y, torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64))
    unbiased = sigmoid_loss(x, y, torch.tensor(10.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    assert at_init < 12 < unbiased


def _value_and_grads(name, n, chunk, seed):
    x, y = _pairs(n, seed=seed, requires_grad=True)
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    loss = contrastive_loss(name, x, y, scale, bias, chunk)
    loss.backward()
    grads = [x.grad, y.grad, scale.grad] + ([bias.grad] if name == "sigmoid" else [])
    return loss.detach(), grads


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(sorted(LOSSES.names())), st.integers(1, 13), st.integers(1, 14), st.integers(0, 5))
def test_chunked_loss_equals_the_full_loss(name, n, chunk, seed):
    full, full_grads = _value_and_grads(name, n, None, seed)
    chunked, chunked_grads = _value_and_grads(name, n, chunk, seed)
    torch.testing.assert_close(chunked, full, rtol=1e-10, atol=1e-12)
    for a, b in zip(chunked_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["sigmoid", "softmax"])
def test_chunked_loss_never_keeps_an_n_by_n_matrix(name):
    """What autograd stores for backward: the full loss keeps N x N tensors, the chunked one none (its blocks
    are recomputed one at a time in backward), so its memory does not grow with N^2."""
    n, chunk = 96, 16

    def largest_saved(c):
        sizes = []
        x, y = _pairs(n, k=8, requires_grad=True)
        scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(-5.0, dtype=torch.float64, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = contrastive_loss(name, x, y, scale, bias, c)
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        return max(sizes)

    assert largest_saved(None) >= n * n
    assert largest_saved(chunk) <= n * 8


@pytest.mark.parametrize("name", ["sigmoid", "softmax"])
@pytest.mark.parametrize("chunk", [None, 2])
def test_no_pairs_and_one_pair(name, chunk):
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = contrastive_loss(name, empty, torch.zeros(0, 4), scale, bias, chunk)
    loss.backward()
    assert loss.item() == 0.0
    x, y = _pairs(1)
    one = contrastive_loss(name, x.float(), y.float(), scale, bias, chunk)
    assert torch.isfinite(one)
    if name == "softmax":
        assert one.item() == pytest.approx(0.0)  # one pair: nothing to tell apart


def test_real_slots_and_flatten_order():
    grids = torch.tensor([[[1, 2, 3], [0, 0, 0], [1, 1, 1]], [[1, 4, 1], [1, 1, 2], [0, 0, 0]]], dtype=torch.int32)
    real = real_slots(grids)
    assert real.tolist() == [[True, False, True], [True, True, False]]
    values = torch.arange(6).reshape(2, 3) * 10
    assert flatten_slots(values, real).tolist() == [0, 20, 30, 40]  # row-major, empty slots out
    emb = torch.arange(24.0).reshape(2, 3, 4)
    assert flatten_slots(emb, real).shape == (4, 4)
    with pytest.raises(ValueError, match="leading"):
        flatten_slots(emb[:, :2], real)


def test_loss_mistakes_are_one_line():
    x, y = _pairs(3)
    t = torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(RegistryError, match="did you mean 'sigmoid'") as err:
        contrastive_loss("sigmoidd", x, y, t, t)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="chunk"):
        contrastive_loss("sigmoid", x, y, t, t, chunk=0)
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        sigmoid_loss(x, y[:2], t, t)
