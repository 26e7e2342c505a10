"""π0.5 attention: optimized (varlen, no pad, no dense mask, prefix KV cache) vs the eager
dense-mask baseline, and the CPU varlen backends compared.

    .venv/bin/python benchmarks/attention.py [--quick] [--no-write]

1. attention op of one layer, fwd+bwd: padded q/k/v + 4-D `make_attn_mask` mask, attended the
   eager way openpi's PyTorch π0.5 trains (matmul, additive mask, fp32 softmax, matmul: the
   baseline) and with torch SDPA (a stronger padded baseline), vs prefix varlen +
   suffix-over-[prefix ∥ suffix] varlen (K/V gather included);
2. denoising loop (10 flow-matching steps, whole Pi05Policy): dense recompute and dense with a
   concatenated KV cache (eager and SDPA), optimized with the in-place prefix KV cache;
3. CPU varlen backends on packs: sdpa_loop, dense block-diagonal mask, padded batch with a
   key-padding mask, and SDPA grouped by equal length (one batched call per length).
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections import defaultdict

import torch
import torch.nn.functional as F
from packed_vs_padded import (interleaved, machine, make_pi05_samples, pack_samples, pad_samples, parse_run_args,
                              samples_to, write_block)

import training
from training.pi05 import dense_attention


def attention_op_case(samples, *, heads, kv_heads, head_dim, horizon, cam_tokens, reps):
    """One layer's attention, fwd+bwd, both formulations on the same real tokens."""
    b, ref = len(samples), samples[0][2]
    g = torch.Generator().manual_seed(0)
    lens = [x.shape[0] for _, _, x in samples]
    cu = training.cu_seqlens_from_lengths(lens).to(ref.device)
    tp = sum(lens)
    qp, kp, vp = (torch.randn(tp, h, head_dim, generator=g).to(ref) for h in (heads, kv_heads, kv_heads))
    qs, ks, vs = (torch.randn(b * horizon, h, head_dim, generator=g).to(ref) for h in (heads, kv_heads, kv_heads))
    leaves = [t.requires_grad_() for t in (qp, kp, vp, qs, ks, vs)]
    # padded layout [image slots ∥ text padded to 200 ∥ suffix], mask as openpi builds it
    shapes_only = [(i, t, torch.zeros(i + t, 1)) for i, t, _ in samples]
    _, mask_p = pad_samples(shapes_only, max_cams_tokens=3 * cam_tokens, max_text=200)
    mask_p = mask_p.to(ref.device)
    n_p = mask_p.shape[1]
    input_mask = torch.cat([mask_p, torch.ones(b, horizon, dtype=torch.bool, device=ref.device)], 1)
    ar = torch.zeros(n_p + horizon, dtype=torch.bool, device=ref.device)
    ar[n_p] = True
    mask4 = training.make_attn_mask(input_mask, ar)[:, None]
    rows_p = mask_p.flatten().nonzero().squeeze(1)

    def dense(kind):
        def pad(x_p, x_s):  # (B, N, heads, head_dim), as a padded model holds them
            out = x_p.new_zeros(b * n_p, *x_p.shape[1:]).index_copy(0, rows_p, x_p).view(b, n_p, *x_p.shape[1:])
            return torch.cat([out, x_s.view(b, horizon, *x_s.shape[1:])], 1)

        o = dense_attention(kind)(pad(qp, qs), pad(kp, ks), pad(vp, vs), mask4)
        o_p = o[:, :n_p].reshape(b * n_p, heads, head_dim).index_select(0, rows_p)
        (o_p.sum() + o[:, n_p:].sum()).backward()

    def optimized():
        pk = training.suffix_packing(cu, horizon)
        o_p = training.varlen_attention(qp, kp, vp, cu, max(lens))
        k, v = torch.cat([kp, ks]).index_select(0, pk.order), torch.cat([vp, vs]).index_select(0, pk.order)
        o_s = training.varlen_attention(qs, k, v, pk.cu_q, horizon, cu_seqlens_k=pk.cu_k, max_seqlen_k=pk.max_k)
        (o_p.sum() + o_s.sum()).backward()

    sec = interleaved({"eager": lambda: dense("eager"), "sdpa": lambda: dense("sdpa"), "optimized": optimized}, reps)
    for t in leaves:
        t.grad = None
    return sec


def denoise_case(samples, cfg, *, cam_tokens, reps, steps=10):
    ref = samples[0][2]
    pol = training.Pi05Policy(cfg).eval().to(ref)
    prefix_pad, mask = pad_samples(samples, max_cams_tokens=3 * cam_tokens, max_text=200)
    packed, cu = pack_samples(samples)
    noise = torch.randn(len(samples), cfg.action_horizon, cfg.action_dim,
                        generator=torch.Generator().manual_seed(0)).to(ref)
    fns = {"optimized_cache": lambda: training.sample_actions(pol, packed, cu, noise, steps)}
    for kind in ("eager", "sdpa"):
        fns[f"{kind}_recompute"] = lambda kind=kind: training.sample_actions_dense(
            pol, prefix_pad, mask, noise, steps, use_cache=False, attention=kind)
        fns[f"{kind}_cat_cache"] = lambda kind=kind: training.sample_actions_dense(
            pol, prefix_pad, mask, noise, steps, attention=kind)
    return interleaved(fns, reps, warmup=0)  # kernels are warm from the attention-op case


def sdpa_grouped(q, k, v, cu, causal):
    """Alternative CPU backend: one batched SDPA per distinct sequence length."""
    bounds = cu.tolist()
    groups = defaultdict(list)
    for s, e in zip(bounds[:-1], bounds[1:]):
        groups[e - s].append(s)
    outs, idx = [], []
    rep = q.shape[1] // k.shape[1]
    for n, starts in groups.items():
        rows = (torch.tensor(starts)[:, None] + torch.arange(n)).flatten()
        qb, kb, vb = (t.index_select(0, rows).view(len(starts), n, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=causal, enable_gqa=rep > 1)
        outs.append(o.transpose(1, 2).reshape(len(starts) * n, *q.shape[1:]))
        idx.append(rows)
    return torch.cat(outs).index_select(0, torch.cat(idx).argsort())


def sdpa_padded(q, k, v, cu, causal):
    """Alternative CPU backend: pad to the longest sequence, one SDPA with a padding mask."""
    lens = (cu[1:] - cu[:-1]).tolist()
    n, m = len(lens), max(lens)
    rows = torch.cat([torch.arange(x) + i * m for i, x in enumerate(lens)])
    valid = torch.zeros(n * m, dtype=torch.bool)
    valid[rows] = True
    mask = valid.view(n, 1, 1, m)
    if causal:
        mask = mask & torch.ones(m, m, dtype=torch.bool).tril()
    def pad(t):
        return t.new_zeros(n * m, *t.shape[1:]).index_copy(0, rows, t).view(n, m, *t.shape[1:]).transpose(1, 2)

    o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
    return o.transpose(1, 2).reshape(n * m, *q.shape[1:]).index_select(0, rows)


def backends_case(lens, *, heads, kv_heads, head_dim, causal, reps, with_dense=True, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    cu = training.cu_seqlens_from_lengths(lens).to(device)
    q, k, v = (torch.randn(sum(lens), h, head_dim, generator=g).to(device, dtype).requires_grad_()
               for h in (heads, kv_heads, kv_heads))
    ref = training.varlen_attention(q, k, v, cu, max(lens), causal, backend="sdpa_loop")
    fused = {name: (lambda name=name: training.varlen_attention(q, k, v, cu, max(lens), causal, backend=name))
             for name in ("flash", "torch_varlen")
             if training._attn_backends.backend_available(name, torch.device(device), dtype, head_dim) is None}
    fns = {**fused,
        "sdpa_loop": lambda: training.varlen_attention(q, k, v, cu, max(lens), causal, backend="sdpa_loop"),
        "sdpa_grouped": lambda: sdpa_grouped(q, k, v, cu, causal),
        "padded_batch": lambda: sdpa_padded(q, k, v, cu, causal),
    }
    if with_dense:
        fns["dense"] = lambda: training.varlen_attention(q, k, v, cu, max(lens), causal, backend="dense")
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for name, fn in fns.items():  # every alternative must be exact before it is timed
        torch.testing.assert_close(fn(), ref, rtol=tol, atol=tol, msg=name)
    return interleaved({n: (lambda f=f: f().sum().backward()) for n, f in fns.items()}, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args, clock, dtype, cfg = parse_run_args(ap)
    cam, batch, reps = 256, 8 if args.pi05_size else 4, args.reps
    if args.quick:
        cam, reps, cfg = 16, 1, training.Pi05Config(width=64, depth=1, heads=4, kv_heads=1, head_dim=16)
    load0 = os.getloadavg()[0]
    lines = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    out("### π0.5 attention: optimized vs eager dense-mask")
    out()
    out(f"`.venv/bin/python benchmarks/attention.py` — {datetime.date.today()}, {machine()}. Timer: {clock}; "
        f"best of {reps}, baselines and optimized alternating per repeat.")  # fmt: skip
    out(f"Shapes: batch {batch}, 3 cameras x {cam} image tokens, text 5-200 uniform (padded to 200 in the "
        f"baselines), {cfg.action_horizon} action tokens, {cfg.heads} query heads / {cfg.kv_heads} KV head x "
        f"{cfg.head_dim}, {args.dtype} on {args.device}. Eager = openpi's PyTorch formulation "
        f"(`training.pi05.eager_padded`: K/V repeated per query head, matmul, additive 4-D mask, fp32 softmax, matmul), the baseline the goal names; SDPA = "
        f"the same padded tensors and mask through torch SDPA, a stronger padded baseline.")  # fmt: skip
    out()
    out("| measurement | eager dense-mask | SDPA dense-mask | optimized | speedup vs eager | vs SDPA |")
    out("|---|---:|---:|---:|---:|---:|")
    samples = samples_to(make_pi05_samples(batch, cfg.width, cam_tokens=cam), args.device, dtype)
    sec = attention_op_case(samples, heads=cfg.heads, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                            horizon=cfg.action_horizon, cam_tokens=cam, reps=reps)  # fmt: skip

    def row(label, eager, sdpa, opt):
        out(f"| {label} | {eager * 1e3:.0f} ms | {sdpa * 1e3:.0f} ms | {opt * 1e3:.0f} ms | "
            f"**{eager / opt:.2f}x** | {sdpa / opt:.2f}x |")

    row("attention op, one layer, fwd+bwd", sec["eager"], sec["sdpa"], sec["optimized"])
    sec = denoise_case(samples, cfg, cam_tokens=cam, reps=max(1, reps - 1))
    opt = sec["optimized_cache"]
    row(f"denoise 10 steps, Pi05Policy (depth {cfg.depth}, width {cfg.width}), baseline recomputes each step",
        sec["eager_recompute"], sec["sdpa_recompute"], opt)
    row("denoise 10 steps, baseline with a concatenated KV cache", sec["eager_cat_cache"], sec["sdpa_cat_cache"], opt)
    out()
    out("### CPU varlen backends (fwd+bwd, exactness checked before timing)")
    out()
    g = torch.Generator().manual_seed(3)
    pi05_lens = [3 * cam + int(torch.randint(5, 201, (1,), generator=g)) for _ in range(batch)]
    short = [int(x) for x in torch.randint(16, 257, (16,), generator=g)]
    bucketed = [int(x) * 64 for x in torch.randint(1, 5, (16,), generator=g)]
    cases = [("π0.5 prefixes (4 seqs, ~870 tok), bidirectional", pi05_lens, False),
             ("16 seqs 16-256 tok, causal", short, True),
             ("16 seqs in 4 length buckets (64..256), causal", bucketed, True)]  # fmt: skip
    names = [n for n in ("flash", "torch_varlen") if args.device != "cpu" and
             training._attn_backends.backend_available(n, torch.device(args.device), dtype, cfg.head_dim) is None]
    names += ["sdpa_loop", "sdpa_grouped", "padded_batch", "dense"]
    out("| pack | " + " | ".join(names) + " |")
    out("|---|" + "---:|" * len(names))
    for label, lens, causal in cases:
        if args.quick:
            lens = [max(1, n // 16) for n in lens]
        sec = backends_case(lens, heads=cfg.heads, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                            causal=causal, reps=reps, device=args.device, dtype=dtype)  # fmt: skip
        best = min(sec.values())
        cells = [f"**{sec[n] * 1e3:.1f} ms**" if sec[n] == best else f"{sec[n] * 1e3:.1f} ms" for n in names]
        out(f"| {label} | " + " | ".join(cells) + " |")
    out()
    out(f"Load average {load0:.1f} -> {os.getloadavg()[0]:.1f} (the machine was shared with other jobs).")
    if not args.no_write and not args.quick:
        write_block("training:attention" + ("" if args.device == "cpu" else ":" + args.device), "\n".join(lines))


if __name__ == "__main__":
    main()
