"""On a CUDA GPU: the fused varlen kernels (flash-attn, torch varlen) equal the exact per-sequence path, and
real FP8 GEMMs equal the emulated ones. Skipped without CUDA (CI has none); needs only torch, so a bare GPU
machine runs it with ``python3 -m pytest --noconftest tests/training/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import training
from training._attn_backends import backend_available

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = [  # (lengths, causal, window, prefix lengths)
    ([1, 17, 64, 130, 256], True, None, None),
    ([33, 200, 7, 96], False, None, None),
    ([40, 128, 90], True, (32, 0), None),
    ([300, 120, 64], False, None, [250, 20, 64]),  # π0.5: bidirectional prefix, causal suffix
    ([300, 120, 64], True, None, [250, 0, 10]),
]


def _qkv(total, heads=8, kv_heads=2, dim=64, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(total, h, dim, device="cuda", dtype=dtype, generator=g).requires_grad_()
            for h in (heads, kv_heads, kv_heads)]


@pytest.mark.parametrize("backend", ["flash", "torch_varlen"])
@pytest.mark.parametrize("lens,causal,window,prefix", CASES)
def test_fused_kernels_equal_the_exact_path_fwd_and_bwd(backend, lens, causal, window, prefix):
    why_not = backend_available(backend, torch.device("cuda"), torch.bfloat16, 64)
    if why_not:
        pytest.skip(why_not)
    cu = training.cu_seqlens_from_lengths(lens).cuda()
    pre = torch.tensor(prefix, device="cuda") if prefix is not None else None
    q, k, v = _qkv(sum(lens))
    go = torch.randn_like(q)
    outs = {}
    for name in (backend, "sdpa_loop"):
        for t in (q, k, v):
            t.grad = None
        o = training.varlen_attention(q, k, v, cu, max(lens), causal, window=window, prefix_lens=pre, backend=name)
        o.backward(go)
        outs[name] = (o.detach().float(), *(t.grad.float() for t in (q, k, v)))
    for a, b, what in zip(outs[backend], outs["sdpa_loop"], ("out", "dq", "dk", "dv")):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2, msg=f"{backend} {what}")


@pytest.mark.parametrize("recipe", training.FP8_RECIPES)
def test_real_fp8_gemms_on_the_gpu_match_the_emulated_ones(recipe):
    if not training.fp8_hardware_supported():
        pytest.skip("FP8 GEMMs need compute capability >= 8.9")
    torch.manual_seed(0)
    lin = nn.Linear(256, 512).cuda()
    x = torch.randn(77, 256, device="cuda", dtype=torch.bfloat16)
    go = torch.randn(77, 512, device="cuda", dtype=torch.bfloat16)
    outs = {}
    for cls in (training.EmulatedFloat8Linear, training.ScaledMMFloat8Linear):
        layer = cls.from_linear(nn.Linear(256, 512).cuda(), recipe)
        layer.load_state_dict(lin.state_dict())
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.backward(go)
        outs[cls.__name__] = (y.float(), xi.grad.float(), layer.weight.grad.float())
    for a, b, what in zip(outs["ScaledMMFloat8Linear"], outs["EmulatedFloat8Linear"], ("out", "dx", "dw")):
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2, msg=what)
