"""FP8 vs bf16 training: step time and loss curve of the same π0.5-like model on the same packed batches.

    python benchmarks/fp8.py [--steps 60] [--out DIR] [--no-write]      # on a GPU with compute capability >= 8.9
    python benchmarks/fp8.py --smoke                                     # tiny, on CPU: checks the code path only

Runs (same seed, same data, AdamW, params in fp32): bf16 autocast (the baseline), then FP8 tensorwise and
rowwise (`training.convert_to_fp8`: torchao when importable, else the `scaled_mm` engine, real FP8 GEMMs
through `torch._scaled_mm` that needs nothing beyond torch). Each step is fwd+bwd of the flow-matching loss
plus a stand-in loss on the prefix outputs over one packed batch of π0.5-like samples (3 x 256 image tokens +
5-200 text tokens per sample, 50 action tokens), timed with the GPU synchronized; the median step after
warm-up is reported, with the loss curves (a PNG) and how far each FP8 curve strays from the bf16 one.
Without an FP8-capable GPU it records that nothing could be measured (emulation says nothing about speed).
Needs only torch (and matplotlib for the plot): a bare GPU machine runs it from the checkout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import training  # noqa: E402
from packed_vs_padded import make_pi05_samples, pack_samples, samples_to, write_block  # noqa: E402

BLOCK = "training:fp8"


def make_batch(cfg, batch, cam_tokens, device, seed=0):
    samples = samples_to(make_pi05_samples(batch, cfg.width, cam_tokens=cam_tokens, seed=seed), device, torch.float32)
    prefix, cu = pack_samples(samples)
    g = torch.Generator().manual_seed(seed + 1)
    actions = torch.randn(batch, cfg.action_horizon, cfg.action_dim, generator=g).to(device)
    noise = torch.randn(actions.shape, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    return prefix, cu, actions, noise, t


def train(cfg, batches, *, steps, fp8: str | None, engine: str | None, device: str, lr=3e-4, seed=0,
          compile_model=False):
    """(losses, seconds per step, converted linear layers, engine used) of one run."""
    torch.manual_seed(seed)
    pol = training.Pi05Policy(cfg).to(device)
    used = None
    if fp8:
        used, _ = training.get_fp8_converter(engine)
        training.convert_to_fp8(pol, recipe=fp8, engine=used, module_filter_fn=training.fp8_module_filter(
            skip_fqns=("action_out",)))  # the output head stays in high precision
    n_fp8 = sum(type(m) is not torch.nn.Linear and isinstance(m, torch.nn.Linear) for m in pol.modules())
    opt = torch.optim.AdamW(pol.parameters(), lr=lr)
    if compile_model:  # fuses the FP8 casts and scaling into few kernels, as torchao recommends
        pol.backbone.forward_packed = torch.compile(pol.backbone.forward_packed, dynamic=True)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    losses, times = [], []
    for step in range(steps):
        prefix, cu, actions, noise, t = batches[step % len(batches)]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            x_t, u_t = training.flow_matching_targets(actions, noise, t)
            p_out, s_out = pol.backbone.forward_packed(prefix, cu, pol.embed_suffix(x_t, t))
            loss = (pol.action_out(s_out).float() - u_t).pow(2).mean() + 1e-3 * p_out.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    return losses, times, n_fp8, used


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, losses in curves.items():
        ax.plot(losses, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("FP8 vs bf16, same model, data and seed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--engine", default=None, help="torchao, scaled_mm, te (default: torchao if importable)")
    ap.add_argument("--out", default=None, help="folder for the JSON figures and the loss-curve PNG")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone in every run")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: runs the code path, measures nothing")
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch RESULTS.md")
    args = ap.parse_args()
    if args.smoke:
        cfg, cam, device = training.Pi05Config(width=64, depth=1, heads=4, kv_heads=1, head_dim=16), 8, "cpu"
        args.steps, args.warmup, args.batch, args.no_write = 3, 1, 2, True
        args.engine = args.engine or "scaled_mm"
    else:
        # π0.5-like shapes where FP8 GEMMs matter: width 2048, MLP 8192 (Gemma-2B-like), 4 layers
        cfg, cam, device = training.Pi05Config(width=2048, depth=4, heads=8, kv_heads=1, head_dim=256,
                                               mlp_ratio=4), 256, "cuda"
        if not training.fp8_hardware_supported():
            why = ("no CUDA device" if not torch.cuda.is_available() else
                   f"{torch.cuda.get_device_name()} has compute capability {torch.cuda.get_device_capability()}")
            body = (f"### FP8 vs bf16 training step\n\nNot measured ({datetime.date.today()}): FP8 GEMMs need a CUDA "
                    f"GPU with compute capability >= 8.9; here: {why}. Run `python benchmarks/fp8.py` on one "
                    "(the device tool's H100/H200); `--smoke` checks the code path on CPU.")
            print(body)
            if not args.no_write:
                write_block(BLOCK, body)
            return
    batches = [make_batch(cfg, args.batch, cam, device, seed=s) for s in range(4)]
    engine = args.engine or ("torchao" if training.fp8._torchao_importable() else "scaled_mm")  # never emulation
    runs = {"bf16": (None, None), "fp8 tensorwise": ("tensorwise", engine), "fp8 rowwise": ("rowwise", engine)}
    res = {}
    for name, (recipe, engine) in runs.items():
        losses, times, n_fp8, used = train(cfg, batches, steps=args.steps, fp8=recipe, engine=engine, device=device,
                                           compile_model=args.compile)
        med = statistics.median(times[args.warmup:])
        res[name] = {"losses": losses, "step_s": med, "fp8_linears": n_fp8, "engine": used}
        print(f"{name}: {med * 1e3:.1f} ms/step, loss {losses[0]:.4f} -> {losses[-1]:.4f}, {n_fp8} FP8 linears "
              f"({used or '-'})", flush=True)
    base = res["bf16"]
    tokens = int(sum(int(b[1][-1]) + args.batch * cfg.action_horizon for b in batches) / len(batches))
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke)"
    lines = [
        "### FP8 vs bf16 training step",
        "",
        f"`python benchmarks/fp8.py --steps {args.steps}{' --compile' if args.compile else ''}` — "
        f"{datetime.date.today()}, {gpu}, torch {torch.__version__}. "
        f"Pi05Policy width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads / {cfg.kv_heads} KV head x {cfg.head_dim}, "
        f"MLP x{cfg.mlp_ratio}; packed batches of {args.batch} π0.5-like samples (~{tokens} tokens); AdamW, fp32 "
        f"params, bf16 autocast in every run; median step after {args.warmup} warm-up steps.",
        "",
        "| run | engine | FP8 linears | ms / step | speedup vs bf16 | final loss | max rel. loss gap to bf16 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in res.items():
        gap = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], base["losses"]))
        lines.append(f"| {name} | {r['engine'] or '—'} | {r['fp8_linears']} | {r['step_s'] * 1e3:.1f} | "
                     f"**{base['step_s'] / r['step_s']:.2f}x** | {r['losses'][-1]:.4f} | {gap:.1%} |")
    body = "\n".join(lines)
    print(body)
    name = "fp8_compiled" if args.compile else "fp8"
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps({"config": vars(args), "results": res, "gpu": gpu}, indent=1))
        plot({k: v["losses"] for k, v in res.items()}, out / f"{name}_loss.png")
        (out / f"{name}.md").write_text(body + "\n")
    if not args.no_write:
        write_block(f"training:{name}", body + f"\n\nLoss curves: `benchmarks/{name}_loss.png`.")
        plot({k: v["losses"] for k, v in res.items()}, Path(__file__).with_name(f"{name}_loss.png"))


if __name__ == "__main__":
    main()
