"""FP8 linear layers for training, by one of three engines chosen with `get_fp8_converter`:

- "torchao": `torchao.float8.convert_to_float8_training` (tensorwise / rowwise recipes);
  real FP8 matmuls on CUDA SM89+, `Float8LinearConfig(emulate=True)` elsewhere;
- "te": NVIDIA Transformer Engine `te.Linear` (CUDA only, tensorwise; run the forward inside
  `fp8_autocast("te")`);
- "scaled_mm": this module's own FP8 linear on `torch._scaled_mm`, needing nothing beyond torch:
  real FP8 GEMMs (fast on SM89+ GPUs; CPU runs them too, slowly, which lets tests check them);
  the same scaling choices as "emulated", so the two agree up to accumulation order;
- "emulated": this module's own fake-quantised linear, for machines without torchao: operands
  round-trip through float8 (e4m3 forward, e5m2 gradients for tensorwise, as torchao does)
  with amax scaling per tensor or per row, matmuls stay in high precision.

Only `nn.Linear` layers that `module_filter_fn` accepts are converted; the default filter
skips layers with a dimension below `min_features` or not a multiple of 16 (FP8 GEMMs need
16-aligned shapes, and small layers lose more to casting than they gain).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = [
    "FP8_ENGINES",
    "FP8_RECIPES",
    "EmulatedFloat8Linear",
    "ScaledMMFloat8Linear",
    "convert_to_fp8",
    "fake_quantize_fp8",
    "fp8_autocast",
    "fp8_hardware_supported",
    "fp8_module_filter",
    "get_fp8_converter",
]

FP8_RECIPES = ("tensorwise", "rowwise")
FilterFn = Callable[[nn.Module, str], bool]


def fp8_hardware_supported(device: torch.device | str | None = None) -> bool:
    """True on a CUDA device with FP8 tensor cores (compute capability >= 8.9)."""
    if not torch.cuda.is_available():
        return False
    device = torch.device("cuda" if device is None else device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_module_filter(min_features: int = 64, multiple: int = 16, skip_fqns: Iterable[str] = ()) -> FilterFn:
    """`module_filter_fn(module, fqn)` accepting `nn.Linear` layers whose in/out features are
    both >= `min_features` and multiples of `multiple`, and whose name contains none of
    `skip_fqns` (e.g. an output head kept in high precision)."""
    skip = tuple(skip_fqns)

    def accept(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or any(s in fqn for s in skip):
            return False
        dims = (module.in_features, module.out_features)
        return all(d >= min_features and d % multiple == 0 for d in dims)

    return accept


def fake_quantize_fp8(t: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn, dim: int | None = None):
    """Round-trip `t` through `fp8_dtype` with scale = fp8 max / amax, the amax taken over the
    whole tensor (`dim=None`) or along `dim` (one scale per slice). Same dtype/shape as `t`."""
    fmax = torch.finfo(fp8_dtype).max
    amax = t.detach().abs().amax() if dim is None else t.detach().abs().amax(dim=dim, keepdim=True)
    scale = fmax / amax.float().clamp_min(1e-12)
    q = (t.float() * scale).clamp(-fmax, fmax).to(fp8_dtype)
    return (q.float() / scale).to(t.dtype)


class _Fp8Matmul(torch.autograd.Function):
    """y = x @ w.T with operands fake-quantised along each GEMM's contraction dim (rowwise) or
    per tensor; the backward GEMMs quantise grad_output too, like real FP8 training."""

    @staticmethod
    def forward(ctx, x2, w, rowwise: bool):
        ctx.save_for_backward(x2, w)
        ctx.rowwise = rowwise
        ax = -1 if rowwise else None
        return fake_quantize_fp8(x2, dim=ax) @ fake_quantize_fp8(w, dim=ax).t()

    @staticmethod
    def backward(ctx, go):
        x2, w = ctx.saved_tensors
        if ctx.rowwise:  # rowwise recipe: e4m3 everywhere, scales along each contraction dim
            g_in, w_in = fake_quantize_fp8(go, dim=-1), fake_quantize_fp8(w, dim=0)
            g_w, x_w = fake_quantize_fp8(go, dim=0), fake_quantize_fp8(x2, dim=0)
        else:  # tensorwise: gradients in e5m2 (more range, less precision)
            g_in = g_w = fake_quantize_fp8(go, torch.float8_e5m2)
            w_in, x_w = fake_quantize_fp8(w), fake_quantize_fp8(x2)
        return g_in @ w_in, g_w.t() @ x_w, None


def _quantize(t: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn, dim: int | None = None):
    """(fp8 tensor, float32 dequantisation scale) with the scaling of `fake_quantize_fp8`."""
    fmax = torch.finfo(fp8_dtype).max
    amax = t.detach().abs().amax() if dim is None else t.detach().abs().amax(dim=dim, keepdim=True)
    scale = fmax / amax.float().clamp_min(1e-12)
    return (t.float() * scale).clamp(-fmax, fmax).to(fp8_dtype), scale.reciprocal()


def _col_major(t: torch.Tensor) -> torch.Tensor:
    return t.t().contiguous().t()


def _pad_rows(t: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """Zero rows up to a multiple of 16: FP8 GEMMs need 16-aligned inner dims; zeros add nothing."""
    extra = -t.shape[0] % multiple
    return t if not extra else torch.cat([t, t.new_zeros(extra, *t.shape[1:])])


def _scaled_mm(a, sa, b, sb, out_dtype):
    """a @ b for fp8 `a` (row-major) and `b` (column-major) with dequantisation scales. Rowwise
    scaling on CUDA wants a bfloat16 output: compute there and cast."""
    rowwise = sa.numel() > 1 or sb.numel() > 1
    dtype = torch.bfloat16 if rowwise and a.is_cuda else out_dtype
    # fresh row-major scales: a transposed (n, 1) view counts as contiguous but keeps stride n
    sa, sb = (s.flatten().clone().view(s.shape) if rowwise else s.reshape(()) for s in (sa, sb))
    return torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=dtype).to(out_dtype)


class _ScaledMMMatmul(torch.autograd.Function):
    """`_Fp8Matmul` with real FP8 GEMMs (`torch._scaled_mm`) instead of fake-quantised ones."""

    @staticmethod
    def forward(ctx, x2, w, rowwise: bool):
        ctx.save_for_backward(x2, w)
        ctx.rowwise = rowwise
        ax = -1 if rowwise else None
        qx, sx = _quantize(x2, dim=ax)
        qw, sw = _quantize(w, dim=ax)
        return _scaled_mm(qx, sx, qw.t(), sw.t() if rowwise else sw, x2.dtype)

    @staticmethod
    def backward(ctx, go):
        x2, w = ctx.saved_tensors
        go = go.contiguous()
        if ctx.rowwise:
            (qg, sg), (qw, sw) = _quantize(go, dim=-1), _quantize(w, dim=0)
            (qgw, sgw), (qx, sx) = _quantize(go, dim=0), _quantize(x2, dim=0)
            sgw = sgw.t()  # per column of go = per row of go.T
        else:
            qg, sg = _quantize(go, torch.float8_e5m2)
            qgw, sgw = qg, sg
            (qw, sw), (qx, sx) = _quantize(w), _quantize(x2)
        grad_x = _scaled_mm(qg, sg, _col_major(qw), sw, x2.dtype)
        # grad_w = go.T @ x: the token dim is the inner one here, padded to 16 with zeros
        grad_w = _scaled_mm(_pad_rows(qgw.float()).to(qgw.dtype).t().contiguous(), sgw,
                            _col_major(_pad_rows(qx.float()).to(qx.dtype)), sx, torch.float32)
        return grad_x, grad_w.to(w.dtype), None


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """Under autocast, the input in the autocast dtype, as `nn.Linear` would compute (autocast does
    not reach custom autograd functions): converted and unconverted layers then agree on dtypes."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(dev))
    return x


class EmulatedFloat8Linear(nn.Linear):
    """`nn.Linear` whose matmuls are emulated FP8 (see `_Fp8Matmul`); bias stays high precision."""

    recipe: str = "tensorwise"
    _matmul = _Fp8Matmul
    _engine = "emulated"

    @classmethod
    def from_linear(cls, lin: nn.Linear, recipe: str) -> EmulatedFloat8Linear:
        """Convert in place of `lin`, sharing its parameters."""
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
        new.weight, new.bias = lin.weight, lin.bias
        new.recipe = recipe
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = _autocast_input(x).reshape(-1, x.shape[-1])
        y = self._matmul.apply(x2, self.weight.to(x2.dtype), self.recipe == "rowwise")
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recipe={self.recipe}, {self._engine}"


class ScaledMMFloat8Linear(EmulatedFloat8Linear):
    """`nn.Linear` with real FP8 matmuls through `torch._scaled_mm` (see `_ScaledMMMatmul`)."""

    _matmul = _ScaledMMMatmul
    _engine = "torch._scaled_mm"


def _swap_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module], module_filter_fn: FilterFn) -> nn.Module:
    """Replace every accepted `nn.Linear` child (and `model` itself) by `make(child)`."""
    if type(model) is nn.Linear and module_filter_fn(model, ""):
        return make(model)
    for fqn, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{fqn}.{name}" if fqn else name
            if type(child) is nn.Linear and module_filter_fn(child, full):
                setattr(parent, name, make(child))
    return model


def _convert_emulated(model, recipe, emulate, module_filter_fn):
    return _swap_linears(model, lambda lin: EmulatedFloat8Linear.from_linear(lin, recipe), module_filter_fn)


def _convert_scaled_mm(model, recipe, emulate, module_filter_fn):
    return _swap_linears(model, lambda lin: ScaledMMFloat8Linear.from_linear(lin, recipe), module_filter_fn)


def _convert_torchao(model, recipe, emulate, module_filter_fn):
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise RuntimeError("engine 'torchao' needs torchao (pip install torchao)") from e
    config = Float8LinearConfig.from_recipe_name(recipe)
    try:  # `emulate` is a Float8LinearConfig field (checked with torchao 0.18)
        config = dataclasses.replace(config, emulate=emulate)
    except TypeError as e:
        raise RuntimeError("this torchao's Float8LinearConfig has no `emulate` field; use engine='emulated'") from e
    return convert_to_float8_training(model, config=config, module_filter_fn=module_filter_fn)


def _convert_te(model, recipe, emulate, module_filter_fn):
    if emulate:
        raise RuntimeError("engine 'te' has no CPU emulation; use engine='torchao' or 'emulated'")
    if recipe != "tensorwise":
        raise ValueError("engine 'te' supports recipe='tensorwise' only (rowwise: use torchao)")
    te = _te_module()

    def make(lin: nn.Linear) -> nn.Module:
        new = te.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                        params_dtype=lin.weight.dtype, device=lin.weight.device)  # fmt: skip
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        return new

    return _swap_linears(model, make, module_filter_fn)


@functools.cache
def _te_module():
    try:
        import transformer_engine.pytorch as te
    except Exception as e:  # ImportError, or a broken CUDA install
        raise RuntimeError("engine 'te' needs NVIDIA Transformer Engine (pip install transformer-engine)") from e
    return te


_CONVERTERS = {"torchao": _convert_torchao, "te": _convert_te, "scaled_mm": _convert_scaled_mm,
               "emulated": _convert_emulated}
FP8_ENGINES = tuple(_CONVERTERS)


@functools.cache
def _torchao_importable() -> bool:
    try:
        import torchao.float8  # noqa: F401
    except Exception:
        return False
    return True


def get_fp8_converter(engine: str | None = None) -> tuple[str, Callable]:
    """Resolve an engine name (None = "torchao" when importable, else "emulated") to
    `(name, convert(model, recipe, emulate, module_filter_fn))`.

    Raises:
        ValueError: unknown engine.
    """
    if engine is None:
        engine = "torchao" if _torchao_importable() else "emulated"
    if engine not in _CONVERTERS:
        raise ValueError(f"unknown FP8 engine {engine!r}; choose one of {FP8_ENGINES} or None")
    return engine, _CONVERTERS[engine]


def convert_to_fp8(
    model: nn.Module,
    *,
    recipe: str = "tensorwise",
    engine: str | None = None,
    emulate: bool | None = None,
    module_filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Swap `model`'s accepted `nn.Linear` layers for FP8 ones (in place; returns the model).

    `emulate=None` emulates unless the model sits on an FP8-capable GPU. `engine=None`: torchao when
    importable, else "scaled_mm" on an FP8-capable GPU and "emulated" elsewhere. Default filter:
    `fp8_module_filter()`.

    Raises:
        ValueError: unknown recipe/engine.
        RuntimeError: `emulate=False` without FP8 hardware, or a missing engine package.
    """
    if recipe not in FP8_RECIPES:
        raise ValueError(f"unknown FP8 recipe {recipe!r}; choose one of {FP8_RECIPES}")
    param = next(model.parameters(), None)
    on_fp8_gpu = fp8_hardware_supported(param.device) if param is not None and param.is_cuda else False
    if emulate is None:
        emulate = not on_fp8_gpu
    elif not emulate and not on_fp8_gpu:
        raise RuntimeError("emulate=False needs the model on a CUDA GPU with compute capability >= 8.9")
    if engine is None and not _torchao_importable() and not emulate:
        engine = "scaled_mm"  # real FP8 GEMMs on this GPU without torchao
    _, convert = get_fp8_converter(engine)
    return convert(model, recipe, emulate, module_filter_fn or fp8_module_filter())


def fp8_autocast(engine: str | None = None):
    """Context for the forward pass: Transformer Engine's `fp8_autocast` for engine "te",
    a no-op for the others (their scaling is inside the layers)."""
    if get_fp8_converter(engine)[0] != "te":
        return contextlib.nullcontext()
    te = _te_module()
    from transformer_engine.common import recipe as te_recipe

    # current (per-step amax) scaling matches torchao's tensorwise; older TE only has delayed
    recipe_cls = getattr(te_recipe, "Float8CurrentScaling", None) or te_recipe.DelayedScaling
    return te.fp8_autocast(enabled=True, fp8_recipe=recipe_cls())
