"""FP8 linears (emulated on CPU): training tracks fp32, unsuitable layers are skipped."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import training
from training.fp8 import EmulatedFloat8Linear, fake_quantize_fp8

ENGINES = ["emulated", "scaled_mm"] + (["torchao"] if importlib.util.find_spec("torchao") else [])
# FP8 e4m3 keeps 3 mantissa bits (~6% per rounding); over a short run the loss may drift by a
# few percent from fp32. Stated tolerance: every step within 10% of the fp32 loss.
REL_TOL = 0.10


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
        nn.Linear(128, 40),  # 40: not a multiple of 16 -> skipped
        nn.GELU(), nn.Linear(40, 8),  # too small -> skipped
    )  # fmt: skip


def train_mlp(model, steps=30):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 64, generator=g)
    y = torch.tanh(x @ torch.randn(64, 8, generator=g) / 8) * 2
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        idx = torch.arange(step * 32, step * 32 + 32) % 256
        loss = (model(x[idx]) - y[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def converted_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and type(m) is not nn.Linear]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("recipe", training.FP8_RECIPES)
def test_fp8_training_tracks_fp32(engine, recipe):
    base = train_mlp(mlp())
    model = training.convert_to_fp8(mlp(), recipe=recipe, engine=engine)
    assert converted_names(model) == ["0", "2"]
    fp8 = train_mlp(model)
    assert base[-1] < 0.3 * base[0]  # the fp32 run learns
    for step, (a, b) in enumerate(zip(fp8, base)):
        assert abs(a - b) <= REL_TOL * b, f"step {step}: fp8 loss {a:.4f} vs fp32 {b:.4f}"


@pytest.mark.parametrize("recipe", training.FP8_RECIPES)
def test_fp8_pi05_policy_steps_track_fp32(recipe):
    cfg = training.Pi05Config(
        width=64, depth=1, heads=4, kv_heads=1, head_dim=16, mlp_ratio=2, action_dim=8, action_horizon=6
    )
    g = torch.Generator().manual_seed(0)
    lens = [20, 13, 17]
    prefix = torch.randn(sum(lens), 64, generator=g)
    cu = training.cu_seqlens_from_lengths(lens)
    actions = torch.randn(3, 6, 8, generator=g)

    def run(convert):
        torch.manual_seed(0)
        pol = training.Pi05Policy(cfg)
        if convert:
            pol = training.convert_to_fp8(pol, recipe=recipe, engine="emulated")
            names = converted_names(pol)
            assert names and not any(n.endswith(("wk", "wv", "action_in", "action_out")) for n in names)
        opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
        gen, losses = torch.Generator().manual_seed(2), []
        for _ in range(5):
            noise, t = torch.randn(actions.shape, generator=gen), torch.rand(3, generator=gen)
            x_t, u_t = training.flow_matching_targets(actions, noise, t)
            loss = (pol.velocity_packed(prefix, cu, x_t, t) - u_t).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    for a, b in zip(run(True), run(False)):
        assert abs(a - b) <= REL_TOL * b


def test_module_filter_skips_small_and_unaligned_layers():
    accept = training.fp8_module_filter(min_features=64, skip_fqns=("head",))
    assert accept(nn.Linear(64, 128), "x")
    assert not accept(nn.Linear(64, 40), "x")  # unaligned
    assert not accept(nn.Linear(16, 64), "x")  # small
    assert not accept(nn.Linear(64, 64), "head")  # skipped by name
    assert not accept(nn.Conv1d(64, 64, 1), "x")
    model = training.convert_to_fp8(mlp(), engine="emulated", module_filter_fn=accept)
    out = model(torch.randn(4, 64))
    out.sum().backward()
    assert out.shape == (4, 8)
    assert isinstance(training.convert_to_fp8(nn.Linear(64, 64), engine="emulated"), EmulatedFloat8Linear)


def test_fake_quantize_fp8_error_bounds():
    x = torch.randn(64, 32, dtype=torch.float64) * 10
    for dim in (None, -1, 0):
        q = fake_quantize_fp8(x, dim=dim)
        rel = ((q - x).abs() / x.abs().clamp_min(1e-3)).max()
        assert q.dtype == x.dtype and rel <= 2.0**-4 + 1e-12  # e4m3: 3 mantissa bits
    assert torch.equal(fake_quantize_fp8(torch.zeros(3)), torch.zeros(3))


def test_bad_fp8_arguments_raise():
    with pytest.raises(ValueError, match="recipe"):
        training.convert_to_fp8(mlp(), recipe="blockwise")
    with pytest.raises(ValueError, match="engine"):
        training.convert_to_fp8(mlp(), engine="nope")
    if not training.fp8_hardware_supported():
        with pytest.raises(RuntimeError, match="emulate=False"):
            training.convert_to_fp8(mlp(), emulate=False)
        with pytest.raises(RuntimeError, match="no CPU emulation"):
            training.convert_to_fp8(mlp(), engine="te")


@pytest.mark.parametrize("recipe", training.FP8_RECIPES)
@pytest.mark.parametrize("tokens", [48, 37])  # 37: the token dim, inner in the weight gradient, is padded
def test_real_fp8_gemms_equal_the_emulated_ones(recipe, tokens):
    """torch._scaled_mm (CPU here) gives what fake-quantised fp32 matmuls give: same scaling, same rounding
    of the operands, so only the accumulation order differs."""
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(64, 96)
    x = torch.randn(tokens, 64, generator=g)
    go = torch.randn(tokens, 96, generator=g)
    outs = {}
    for name, cls in (("emulated", EmulatedFloat8Linear), ("scaled_mm", training.ScaledMMFloat8Linear)):
        layer = cls.from_linear(nn.Linear(64, 96), recipe)
        layer.load_state_dict(lin.state_dict())
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.backward(go)
        outs[name] = (y.detach(), xi.grad, layer.weight.grad, layer.bias.grad)
    tol = 1e-5
    for a, b, what in zip(outs["scaled_mm"], outs["emulated"], ("output", "grad input", "grad weight", "grad bias")):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=what)


@pytest.mark.parametrize("cls", [EmulatedFloat8Linear, training.ScaledMMFloat8Linear])
def test_converted_layers_follow_autocast_like_nn_linear(cls):
    lin = nn.Linear(64, 32)
    conv = cls.from_linear(lin, "tensorwise")
    x = torch.randn(5, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == conv(x).dtype == torch.bfloat16  # q and k projections must agree in attention
    assert conv(x).dtype == torch.float32
