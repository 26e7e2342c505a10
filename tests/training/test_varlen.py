"""Packed varlen attention equals each sequence run alone, and the pack helpers are exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import training
from training import cu_seqlens_from_lengths, position_ids_from_cu_seqlens, varlen_attention

CPU_BACKENDS = ["sdpa_loop", "dense"]


MASKS = {
    "full": {},
    "causal": {"causal": True},
    "window": {"window": (3, 2)},
    "causal_window": {"causal": True, "window": (4, -1)},
    "prefix": {"prefix": True},
    "prefix_causal": {"prefix": True, "causal": True},
    "prefix_window": {"prefix": True, "window": (2, 5)},
}


def reference_mask(length: int, prefix: int, causal: bool, window) -> torch.Tensor:
    """Written out element by element, independently of training.masks."""
    m = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        for j in range(length):
            ok = j < prefix or i >= prefix  # prefix never sees the suffix
            if causal:
                ok = ok and (j <= i or j < prefix)
            if window is not None:
                left, right = window
                ok = ok and (left < 0 or j >= i - left) and (right < 0 or j <= i + right)
            m[i, j] = ok
    return m


def sdpa_tokens(q, k, v, mask, scale=None):
    """SDPA on one `(tokens, heads, dim)` sequence; GQA by repeating K/V heads."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(0, 1)


def per_sequence(q, k, v, lens, prefixes, causal=False, window=None):
    """Each sequence alone through SDPA."""
    splits = zip(q.split(lens), k.split(lens), v.split(lens), lens, prefixes)
    return torch.cat([sdpa_tokens(qi, ki, vi, reference_mask(n, p, causal, window)) for qi, ki, vi, n, p in splits])


def make_qkv(total, heads=4, kv_heads=2, dim=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(total, heads, dim, generator=g, dtype=dtype)
    k = torch.randn(total, kv_heads, dim, generator=g, dtype=dtype)
    v = torch.randn(total, kv_heads, dim, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v)]


def grads(out_fn, tensors, seed=1):
    out = out_fn(*tensors)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out, *torch.autograd.grad(out, tensors, g))


def prefixes_for(lens):
    return [(n * 2) // 3 for n in lens]  # includes 0 (n=1) and partial prefixes


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_packed_matches_per_sequence_fwd_and_grads(backend, mask_name):
    spec = dict(MASKS[mask_name])
    use_prefix = spec.pop("prefix", False)
    lens = [1, 7, 16, 3, 1, 11]  # lengths 1 and the max (16) included
    pre = prefixes_for(lens) if use_prefix else [0] * len(lens)
    kw = dict(spec, prefix_lens=torch.tensor(pre) if use_prefix else None)
    cu = cu_seqlens_from_lengths(lens)
    qkv = make_qkv(sum(lens))
    got = grads(lambda q, k, v: varlen_attention(q, k, v, cu, max(lens), backend=backend, **kw), qkv)
    want = grads(lambda q, k, v: per_sequence(q, k, v, lens, pre, spec.get("causal", False), spec.get("window")), qkv)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"{name} differs")


@settings(max_examples=25, deadline=None)
@given(
    lens=st.lists(st.integers(1, 24), min_size=1, max_size=6),
    causal=st.booleans(),
    use_prefix=st.booleans(),
)
def test_random_length_distributions(lens, causal, use_prefix):
    pre = prefixes_for(lens) if use_prefix else [0] * len(lens)
    cu = cu_seqlens_from_lengths(lens)
    q, k, v = make_qkv(sum(lens), seed=len(lens))
    got = varlen_attention(q, k, v, cu, max(lens), causal, prefix_lens=torch.tensor(pre) if use_prefix else None)
    torch.testing.assert_close(got, per_sequence(q, k, v, lens, pre, causal), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_perturbing_one_sequence_leaves_others_bit_identical(backend, causal):
    lens = [5, 9, 1, 12]
    cu = cu_seqlens_from_lengths(lens)
    fn = lambda q, k, v: varlen_attention(q, k, v, cu, max(lens), causal, backend=backend)  # noqa: E731
    base = grads(fn, make_qkv(sum(lens)))
    q, k, v = (t.detach().clone() for t in make_qkv(sum(lens)))
    s, e = 5, 14  # sequence 1
    for t in (q, k, v):
        t[s:e] += torch.randn_like(t[s:e])
    pert = grads(fn, [t.requires_grad_() for t in (q, k, v)])
    keep = torch.ones(sum(lens), dtype=torch.bool)
    keep[s:e] = False
    for a, b in zip(base, pert):
        assert torch.equal(a[keep], b[keep])
    assert not torch.equal(base[0][~keep], pert[0][~keep])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_permuting_sequences_permutes_outputs(backend):
    lens = [4, 10, 1, 7]
    perm = [2, 0, 3, 1]
    q, k, v = (t.detach() for t in make_qkv(sum(lens)))
    out = varlen_attention(q, k, v, cu_seqlens_from_lengths(lens), 10, True, backend=backend)
    split = lambda t: t.split(lens)  # noqa: E731
    qp, kp, vp = (torch.cat([split(t)[i] for i in perm]) for t in (q, k, v))
    out_p = varlen_attention(qp, kp, vp, cu_seqlens_from_lengths([lens[i] for i in perm]), 10, True, backend=backend)
    torch.testing.assert_close(out_p, torch.cat([split(out)[i] for i in perm]), rtol=1e-12, atol=1e-12)


def test_cross_attention_with_key_packing_is_bottom_right_aligned():
    lq, lk = [2, 3, 1], [5, 3, 4]
    q = make_qkv(sum(lq))[0].detach()
    _, k, v = (t.detach() for t in make_qkv(sum(lk), seed=3))
    for causal in (False, True):
        got = varlen_attention(q, k, v, cu_seqlens_from_lengths(lq), 3, causal,
                               cu_seqlens_k=cu_seqlens_from_lengths(lk), max_seqlen_k=5)  # fmt: skip
        splits = zip(q.split(lq), k.split(lk), v.split(lk), lq, lk)
        # the last `a` rows of the full mask = bottom-right alignment
        want = torch.cat([sdpa_tokens(qi, ki, vi, reference_mask(b, 0, causal, None)[b - a :])
                          for qi, ki, vi, a, b in splits])  # fmt: skip
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_auto_backend_on_cpu_is_sdpa_loop_and_fp32_works():
    name, _ = training.get_attention_backend(None, torch.device("cpu"), torch.float32)
    assert name == "sdpa_loop"
    q, k, v = (t.detach().float() for t in make_qkv(12))
    out = varlen_attention(q, k, v, cu_seqlens_from_lengths([5, 7]), 7, True)
    torch.testing.assert_close(out, per_sequence(q, k, v, [5, 7], [0, 0], True), rtol=1e-5, atol=1e-5)


def test_position_ids_restart_per_sequence():
    cu = cu_seqlens_from_lengths([3, 1, 0, 4])
    pos = position_ids_from_cu_seqlens(cu)
    assert pos.dtype == torch.int64
    assert pos.tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


def test_pack_losses_equal_unpacked_means():
    g = torch.Generator().manual_seed(0)
    lens = [3, 8, 1, 5]
    samples = [torch.rand(n, 2, generator=g, dtype=torch.float64) for n in lens]
    masks = [torch.rand(n, generator=g) > 0.3 for n in lens]
    masks[2][:] = True
    packed, pmask = torch.cat(samples), torch.cat(masks)
    cu = cu_seqlens_from_lengths(lens)
    want_token = torch.cat([s[m] for s, m in zip(samples, masks)]).mean()
    torch.testing.assert_close(training.packed_token_mean(packed, pmask), want_token)
    want_seq = torch.stack([s[m].mean() for s, m in zip(samples, masks)])
    torch.testing.assert_close(training.packed_sequence_means(packed, cu, pmask), want_seq)
    # gradient accumulation: two packs normalised by the global token count sum to the global mean
    n = int(pmask.sum())
    split = cu_seqlens_from_lengths(lens[:2])[-1]
    parts = [training.packed_token_mean(packed[a:b], pmask[a:b], num_tokens=n) for a, b in ((0, split), (split, None))]
    torch.testing.assert_close(parts[0] + parts[1], want_token)


@pytest.mark.parametrize(
    "cu, err, match",
    [
        (torch.tensor([1, 4, 8], dtype=torch.int32), ValueError, "start at 0"),
        (torch.tensor([0, 5, 3, 8], dtype=torch.int32), ValueError, "non-decreasing"),
        (torch.tensor([0, 4, 7], dtype=torch.int32), ValueError, "end at the token count 8"),
        (torch.tensor([0, 4, 8], dtype=torch.int64), TypeError, "int32"),
        (torch.tensor([0.0, 4.0, 8.0]), TypeError, "int32"),
        (torch.tensor([[0, 4, 8]], dtype=torch.int32), ValueError, "1-D"),
        ([0, 4, 8], TypeError, "torch.Tensor"),
    ],
)
def test_bad_cu_seqlens_raise_clear_errors(cu, err, match):
    q, k, v = (t.detach() for t in make_qkv(8))
    with pytest.raises(err, match=match):
        varlen_attention(q, k, v, cu, 8)


def test_other_bad_inputs_raise():
    q, k, v = (t.detach() for t in make_qkv(8))
    cu = cu_seqlens_from_lengths([4, 4])
    cases = [
        (dict(max_seqlen=3), ValueError, "max_seqlen=3"),
        (dict(prefix_lens=torch.tensor([5, 0])), ValueError, "prefix_lens"),
        (dict(prefix_lens=torch.tensor([1])), ValueError, "1 entries for 2"),
        (dict(window=(3,)), ValueError, "window"),
        (dict(window=(-2, 1)), ValueError, ">= -1"),
        (dict(backend="nope"), ValueError, "unknown attention backend"),
        (dict(backend="flash"), RuntimeError, "CUDA"),
        (dict(backend="torch_varlen"), RuntimeError, "CUDA"),
    ]
    for kw, err, match in cases:
        args = dict(max_seqlen=4) | kw
        with pytest.raises(err, match=match):
            varlen_attention(q, k, v, cu, **args)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        varlen_attention(q, k[:, :1].expand(8, 3, 8).contiguous(), v[:, :1].expand(8, 3, 8).contiguous(), cu, 4)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        varlen_attention(q, k[:6], v[:6], cu, 4)
    with pytest.raises(ValueError, match="at least one key"):
        varlen_attention(q, k[:4], v[:4], cu, 4, cu_seqlens_k=cu_seqlens_from_lengths([4, 0]), max_seqlen_k=4)


def _fake_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, causal, window):
    """Stand-in for the CUDA kernels' documented semantics (bottom-right aligned masks)."""
    bq, bk = cu_q.tolist(), cu_k.tolist()
    lq = [b - a for a, b in zip(bq[:-1], bq[1:])]
    lk = [b - a for a, b in zip(bk[:-1], bk[1:])]
    if max(lq) > max_q or max(lk) > max_k or cu_q.dtype != torch.int32 or cu_k.dtype != torch.int32:
        raise AssertionError("kernel called with inconsistent cu_seqlens / max_seqlen")
    splits = zip(q.split(lq), k.split(lk), v.split(lk), lq, lk)
    return torch.cat([sdpa_tokens(qi, ki, vi, reference_mask(b, 0, causal, window)[b - a :], scale)
                      for qi, ki, vi, a, b in splits])  # fmt: skip


def fake_flash_attn_varlen_func(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
    causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
    return_attn_probs=False, block_table=None,
):  # fmt: skip
    """flash-attn 2's documented signature."""
    if dropout_p != 0.0 or softcap != 0.0 or alibi_slopes is not None or return_attn_probs:
        raise AssertionError("unexpected flash-attn options")
    return _fake_varlen_kernel(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               scale=softmax_scale, causal=causal, window=tuple(window_size))  # fmt: skip


def fake_torch_varlen_attn(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
    window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None,
):  # fmt: skip
    """torch 2.13's `torch.nn.attention.varlen.varlen_attn`: causal is window (-1, 0)."""
    if key.shape[1] != query.shape[1] and not enable_gqa:
        raise ValueError("GQA needs enable_gqa=True")
    return _fake_varlen_kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                               scale=scale, causal=False, window=tuple(window_size))  # fmt: skip


@pytest.mark.parametrize("name", ["flash", "torch_varlen"])
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_cuda_backend_wiring_against_documented_kernel_semantics(monkeypatch, name, mask_name):
    """No GPU here: check the argument wiring and the prefix split with stand-in kernels."""
    from training import _attn_backends as ab

    monkeypatch.setattr(ab, "_flash_attn_varlen_func", lambda: fake_flash_attn_varlen_func)
    monkeypatch.setattr(ab, "_torch_varlen_attn", lambda: fake_torch_varlen_attn)
    spec = dict(MASKS[mask_name])
    use_prefix = spec.pop("prefix", False)
    lens = [1, 7, 16, 3, 11]
    pre = prefixes_for(lens) if use_prefix else [0] * len(lens)
    cu = cu_seqlens_from_lengths(lens)
    q, k, v = (t.detach() for t in make_qkv(sum(lens)))
    got = ab.BACKENDS[name](q, k, v, cu, cu, 16, 16, causal=spec.get("causal", False), window=spec.get("window"),
                            prefix_lens=torch.tensor(pre) if use_prefix else None, scale=0.3)  # fmt: skip
    want = varlen_attention(q, k, v, cu, 16, spec.get("causal", False), window=spec.get("window"),
                            prefix_lens=torch.tensor(pre) if use_prefix else None, softmax_scale=0.3)  # fmt: skip
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
