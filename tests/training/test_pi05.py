"""π0.5-like model: the packed/varlen formulation equals the dense-mask one on real tokens,
and the KV-cached denoising loop equals recomputing everything, without copying the cache."""

from __future__ import annotations

import pytest
import torch

import training
from training import Pi05Config, Pi05Policy, cu_seqlens_from_lengths, sample_actions, sample_actions_dense

CFG = Pi05Config(width=32, depth=2, heads=4, kv_heads=2, head_dim=8, mlp_ratio=2, action_dim=6, action_horizon=5)
IMAGE, TEXT_MAX, TEXT = 6, 9, [2, 9, 0, 5]  # text lengths 0 and max included


def make_policy(seed=0):
    torch.manual_seed(seed)
    pol = Pi05Policy(CFG).double()
    with torch.no_grad():
        for p in pol.parameters():  # norms start at 0 and would hide mistakes: randomise all
            p.normal_(0, 0.3)
    return pol


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(TEXT)
    prefix = torch.randn(b, IMAGE + TEXT_MAX, CFG.width, generator=g, dtype=torch.float64)
    mask = torch.zeros(b, IMAGE + TEXT_MAX, dtype=torch.bool)
    for i, n in enumerate(TEXT):
        mask[i, : IMAGE + n] = True
    cu = cu_seqlens_from_lengths(mask.sum(1))
    suffix = torch.randn(b, CFG.action_horizon, CFG.width, generator=g, dtype=torch.float64)
    noise = torch.randn(b, CFG.action_horizon, CFG.action_dim, generator=g, dtype=torch.float64)
    return prefix, mask, cu, suffix, noise


@pytest.mark.parametrize("backend,attention", [("sdpa_loop", "sdpa"), ("dense", "sdpa"), ("sdpa_loop", "eager")])
def test_packed_equals_dense_mask_forward_and_grads(backend, attention):
    pol = make_policy()
    prefix, mask, cu, suffix, _ = make_batch()
    g = torch.Generator().manual_seed(5)
    w_pre = torch.randn(int(mask.sum()), CFG.width, generator=g, dtype=torch.float64)
    w_suf = torch.randn(suffix.shape, generator=g, dtype=torch.float64)

    def run(fn):
        pol.zero_grad()
        x_pre = prefix.clone().requires_grad_()
        x_suf = suffix.clone().requires_grad_()
        p_out, s_out = fn(x_pre, x_suf)
        loss = (p_out * w_pre).sum() + (s_out * w_suf).sum()
        loss.backward()
        param_grads = [p.grad.clone() for p in pol.backbone.parameters()]
        return p_out.detach(), s_out.detach(), x_pre.grad[mask], x_suf.grad, param_grads

    def dense(x_pre, x_suf):
        p_out, s_out = pol.backbone.forward_dense(x_pre, mask, x_suf, attention=attention)
        return p_out[mask], s_out  # real tokens only

    def packed(x_pre, x_suf):
        return pol.backbone.forward_packed(x_pre[mask], cu, x_suf, backend=backend)

    want, got = run(dense), run(packed)
    for a, b in zip(got[:4], want[:4]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for (name, _), a, b in zip(pol.backbone.named_parameters(), got[4], want[4]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"grad of {name}")


def test_flow_matching_loss_matches_between_formulations():
    pol = make_policy(1)
    prefix, mask, cu, _, noise = make_batch(1)
    actions = torch.randn_like(noise)
    t = torch.tensor([0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    x_t, u_t = training.flow_matching_targets(actions, noise, t)
    dense = (pol.velocity_dense(prefix, mask, x_t, t) - u_t).pow(2).mean()
    packed = (pol.velocity_packed(prefix[mask], cu, x_t, t) - u_t).pow(2).mean()
    torch.testing.assert_close(packed, dense, rtol=1e-12, atol=1e-12)


def test_kv_cached_denoising_equals_recomputing_each_step():
    pol = make_policy(2)
    prefix, mask, cu, _, noise = make_batch(2)
    cached = sample_actions(pol, prefix[mask], cu, noise, num_steps=6)
    recomputed = sample_actions(pol, prefix[mask], cu, noise, num_steps=6, use_cache=False)
    dense = sample_actions_dense(pol, prefix, mask, noise, num_steps=6, use_cache=False)
    dense_cached = sample_actions_dense(pol, prefix, mask, noise, num_steps=6)
    torch.testing.assert_close(cached, recomputed, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cached, dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dense_cached, dense, rtol=1e-10, atol=1e-10)
    eager = sample_actions_dense(pol, prefix, mask, noise, num_steps=6, attention="eager")
    torch.testing.assert_close(eager, dense, rtol=1e-10, atol=1e-10)


def test_unknown_dense_attention_is_refused():
    pol = make_policy(2)
    prefix, mask, _, suffix, _ = make_batch(2)
    with pytest.raises(ValueError, match="unknown dense attention 'flash'"):
        pol.backbone.forward_dense(prefix, mask, suffix, attention="flash")


def test_prefix_cache_is_written_in_place_not_copied_per_step():
    pol = make_policy(3)
    prefix, mask, cu, suffix, _ = make_batch(3)
    bb = pol.backbone
    cache = bb.prefill(prefix[mask], cu, CFG.action_horizon)
    ptrs = [(k.data_ptr(), v.data_ptr()) for k, v in zip(cache.keys, cache.values)]
    rows = cache.packing.prefix_rows
    prefix_kv = [(k[rows].clone(), v[rows].clone()) for k, v in zip(cache.keys, cache.values)]
    outs = []
    for step in range(3):
        outs.append(bb.forward_suffix(suffix + step, cache))
        assert [(k.data_ptr(), v.data_ptr()) for k, v in zip(cache.keys, cache.values)] == ptrs
    for (k, v), (k0, v0) in zip(zip(cache.keys, cache.values), prefix_kv):
        assert torch.equal(k[rows], k0) and torch.equal(v[rows], v0)
    # every step saw its own suffix (slots overwritten), same as a fresh full forward
    _, want = bb.forward_packed(prefix[mask], cu, suffix + 2)
    torch.testing.assert_close(outs[-1], want, rtol=1e-12, atol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        Pi05Config(heads=6, kv_heads=4)
    with pytest.raises(ValueError, match="even"):
        Pi05Config(head_dim=7)
    pol = make_policy()
    prefix, mask, cu, suffix, noise = make_batch()
    with pytest.raises(ValueError, match="cu_prefix"):
        pol.backbone.forward_packed(prefix[mask][:-1], cu, suffix)
    cache = pol.backbone.prefill(prefix[mask], cu, CFG.action_horizon)
    with pytest.raises(ValueError, match="does not match the cache"):
        pol.backbone.forward_suffix(suffix[:, :-1], cache)
    with pytest.raises(ValueError, match="num_steps"):
        sample_actions(pol, prefix[mask], cu, noise, num_steps=0)
