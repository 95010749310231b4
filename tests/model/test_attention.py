import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from patchpack.model.attention import (
    BACKENDS,
    AttentionBackend,
    AttentionRequest,
    attend,
    available_backends,
    build_mask,
    explain_backend,
    resolve_backend,
    segment_attention,
    segment_softmax,
    segment_sum,
)
from patchpack.registry import RegistryError

CPU_BACKENDS = ["window", "sdpa", "math", "flex"] if "flex" in available_backends("cpu") else ["window", "sdpa", "math"]


def _reference(q, k, v, seg):
    """Attention computed separately for each segment with a plain softmax."""
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        for s in seg[b].unique():
            idx = (seg[b] == s).nonzero().flatten()
            qs, ks, vs = q[b][:, idx], k[b][:, idx], v[b][:, idx]
            w = torch.softmax(qs @ ks.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
            out[b][:, idx] = w @ vs
    return out


def _qkv(b, h, l, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, l, d, generator=g) for _ in range(3)]


def _segments(lengths_per_row, l):
    seg = torch.zeros(len(lengths_per_row), l, dtype=torch.int32)
    for r, lengths in enumerate(lengths_per_row):
        o = 0
        for j, n in enumerate(lengths):
            seg[r, o : o + n] = j + 1
            o += n
    return seg


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_match_per_segment_reference(backend):
    seg = _segments([[5, 3, 7], [16], [1, 1], []], 16)
    q, k, v = _qkv(4, 2, 16, 8)
    out = segment_attention(q, k, v, seg, backend=backend, max_segment_len=16)
    real = (seg > 0)[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], _reference(q, k, v, seg)[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()  # padding rows and all-padding rows too


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(1, 9), min_size=0, max_size=6), min_size=1, max_size=3),
       st.integers(0, 40), st.integers(0, 6))
def test_sdpa_and_window_match_reference_for_any_layout(rows, extra, slack):
    l = max(1, max(sum(r) for r in rows)) + extra  # trailing padding of any length
    seg = _segments(rows, l)
    bound = max([n for r in rows for n in r], default=1) + slack  # any bound >= the longest example
    q, k, v = _qkv(len(rows), 2, l, 4, seed=len(rows))
    ref = _reference(q, k, v, seg)
    torch.testing.assert_close(segment_attention(q, k, v, seg, "sdpa"), ref, atol=1e-5, rtol=1e-5)
    out = segment_attention(q, k, v, seg, "window", bound)
    real = (seg > 0)[:, None, :, None].expand_as(out)  # padding only has to stay finite
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_window_is_linear_in_length_and_checks_its_bound():
    seg = _segments([[20] * 10, [7, 30, 3]], 200)
    mask = build_mask(seg, "auto", max_segment_len=30)
    assert mask.backend == "window"
    c, n, w, m = mask.window_layout()
    assert (c, w, m) == (32, 92, 30) and n * c >= 200
    assert mask.additive(torch.float32).shape == (2 * n, 1, c, w)  # B * L * W entries, not B * L^2
    assert build_mask(seg, "auto").backend == "sdpa"  # no bound known
    assert build_mask(seg, "auto", max_segment_len=90).backend == "sdpa"  # the window would not be shorter
    with pytest.raises(RuntimeError, match="max_segment_len=25"):
        build_mask(seg, "window", max_segment_len=25)
    with pytest.raises(ValueError, match="needs a bound on tokens per example"):
        build_mask(seg, "window")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_leakage_between_segments(backend):
    seg = _segments([[6, 4, 5]], 18)
    q, k, v = _qkv(1, 2, 18, 8)
    attn = lambda q, k, v, seg, backend: segment_attention(q, k, v, seg, backend, max_segment_len=6)  # noqa: E731
    base = attn(q, k, v, seg, backend)
    k2, v2 = k.clone(), v.clone()
    other = (seg[0] != 1).nonzero().flatten()
    k2[:, :, other] += 5.0
    v2[:, :, other] -= 3.0
    moved = attn(q, k2, v2, seg, backend)
    mine = (seg[0] == 1).nonzero().flatten()
    assert torch.equal(base[:, :, mine], moved[:, :, mine])


@pytest.mark.parametrize("backend", ["sdpa", "window", "math"])
def test_gradients_stay_in_segment(backend):
    seg = _segments([[4, 6]], 12)
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 2, 12, 4))
    out = segment_attention(q, k, v, seg, backend, max_segment_len=6)
    out[:, :, :4].sum().backward()  # only the first example
    for t in (q, k, v):
        assert t.grad[:, :, 4:].abs().max() == 0
        assert t.grad[:, :, :4].abs().max() > 0


def test_mask_is_built_once_and_reused():
    seg = _segments([[3, 5]], 8)
    mask = build_mask(seg, "sdpa")
    assert mask.allowed.shape == (1, 1, 8, 8)
    assert mask.additive(torch.float32) is mask.additive(torch.float32)  # built once, shared by layers
    q, k, v = _qkv(1, 2, 8, 4)
    torch.testing.assert_close(attend(q, k, v, mask), segment_attention(q, k, v, seg, "sdpa"))
    with pytest.raises(ValueError, match="mask is for"):
        attend(*_qkv(1, 2, 9, 4), mask)


def test_backend_resolution():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert "varlen" not in available_backends("cpu", torch.bfloat16)
    with pytest.raises(RegistryError, match="unknown attention backend 'windw'; did you mean 'window'"):
        resolve_backend("windw", "cpu")
    with pytest.raises(ValueError, match="'varlen' cannot run.*needs CUDA"):
        resolve_backend("varlen", "cpu", torch.bfloat16)
    if "flex" in available_backends("cpu"):
        with pytest.raises(ValueError, match="no backward on CPU"):
            resolve_backend("flex", "cpu", requires_grad=True)
        assert "flex" not in available_backends("cpu", requires_grad=True)
    assert resolve_backend("auto", "cpu", length=4096, max_segment_len=256) == "window"
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        build_mask(torch.zeros(4, dtype=torch.int32))


def test_auto_names_its_choice_and_why_the_others_were_passed_over():
    req = AttentionRequest(torch.device("cpu"), torch.float32, True, 32, 4096, 256)
    name, reason = explain_backend("auto", req)
    assert name == "window"
    assert reason.startswith("attention 'auto' -> 'window' (cpu, float32, training, rows of 4096): ")
    assert "not varlen: needs CUDA" in reason and "not flex: FlexAttention has no backward on CPU" in reason
    short = explain_backend("auto", AttentionRequest(torch.device("cpu"), length=300, max_segment_len=256))
    assert short[0] == "sdpa" and "not window: its 768-key window is over half the 300-token row" in short[1]
    assert explain_backend("math", req) == ("math", "attention 'math' (cpu, float32, training, rows of 4096): configured")
    mask = build_mask(_segments([[3, 5]], 8), "auto")
    assert mask.backend == "sdpa" and "'auto' -> 'sdpa'" in mask.reason


def test_a_registered_backend_is_used_and_checked():
    calls = []

    def attend_twice(q, k, v, mask):
        calls.append(mask.backend)
        return BACKENDS.get("sdpa").attend(q, k, v, mask)

    def only_small_heads(req):
        return None if req.head_dim is None or req.head_dim <= 4 else f"needs a head dim <= 4 (got {req.head_dim})"

    BACKENDS.register("test-sdpa", AttentionBackend(attend_twice, only_small_heads))
    try:
        seg = _segments([[3, 5]], 8)
        q, k, v = _qkv(1, 2, 8, 4)
        torch.testing.assert_close(segment_attention(q, k, v, seg, "test-sdpa"), segment_attention(q, k, v, seg, "sdpa"))
        assert calls == ["test-sdpa"]
        with pytest.raises(ValueError, match="needs a head dim <= 4 \\(got 8\\)"):
            segment_attention(*_qkv(1, 2, 8, 8), seg, "test-sdpa")
        assert "test-sdpa" in available_backends("cpu")
    finally:
        BACKENDS.unregister("test-sdpa")


def test_segment_softmax_and_sum():
    index = torch.tensor([[0, 1, 1, 2, 2, 2, 0]])
    logits = torch.randn(1, 7, 3)
    p = segment_softmax(logits, index, 4)
    sums = segment_sum(p, index, 4)
    torch.testing.assert_close(sums[0, :3], torch.ones(3, 3))
    assert torch.equal(sums[0, 3], torch.zeros(3))  # empty segment
    torch.testing.assert_close(p[0, 1:3], torch.softmax(logits[0, 1:3], 0))
    big = segment_softmax(torch.full((1, 3, 1), 1e4), torch.tensor([[0, 0, 1]]), 2)
    assert torch.isfinite(big).all()
