"""Packed (varlen, no pad, no dense mask) vs padded (dense 4-D mask) training throughput.

Same π0.5-like model (training.Pi05Policy), same samples, fwd+bwd of the flow-matching loss
plus a stand-in loss on the prefix outputs. Reports effective (non-pad) tokens/s. The padded
baseline attends the eager way openpi's PyTorch π0.5 trains (matmul, additive mask, fp32
softmax); the same padded batch through torch SDPA is reported beside it (a stronger baseline).

    .venv/bin/python benchmarks/packed_vs_padded.py [--quick] [--no-write]

Sample lengths (π0.5-like): image tokens = cameras x tokens per camera (3 x 256 by default,
every camera present), instruction 5-200 tokens uniform (padded to 200 in the baseline, as
openpi's tokenizer does), 50 action tokens. Measurements alternate baseline and packed per
repeat, so background load hits both alike; medians are reported.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import time
from pathlib import Path

import torch

import training

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## training/: packed varlen attention, π0.5 attention, FP8"


def make_pi05_samples(n, width, *, cam_tokens=256, cameras=(3, 3), text=(5, 200), seed=0):
    """Per-sample prefix embeddings `(image + text tokens, width)`; cameras uniform in the range."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        cams = int(torch.randint(cameras[0], cameras[1] + 1, (1,), generator=g))
        txt = int(torch.randint(text[0], text[1] + 1, (1,), generator=g))
        out.append((cams * cam_tokens, txt, torch.randn(cams * cam_tokens + txt, width, generator=g)))
    return out


def samples_to(samples, device, dtype):
    return [(img, txt, x.to(device, dtype)) for img, txt, x in samples]


def pad_samples(samples, *, max_cams_tokens, max_text):
    """openpi layout: [image slots (missing cameras = pad) ∥ text padded to max_text]."""
    b, x0 = len(samples), samples[0][2]
    prefix = x0.new_zeros(b, max_cams_tokens + max_text, x0.shape[1])
    mask = torch.zeros(b, max_cams_tokens + max_text, dtype=torch.bool, device=x0.device)
    for i, (img, txt, x) in enumerate(samples):
        prefix[i, :img], mask[i, :img] = x[:img], True
        prefix[i, max_cams_tokens : max_cams_tokens + txt] = x[img:]
        mask[i, max_cams_tokens : max_cams_tokens + txt] = True
    return prefix, mask


def pack_samples(samples):
    lens = [x.shape[0] for _, _, x in samples]
    x = torch.cat([x for _, _, x in samples])
    return x, training.cu_seqlens_from_lengths(lens).to(x.device)


CLOCK = {"name": "cpu", "fn": time.thread_time}
# π0.5's PaliGemma widths (Gemma 2B: width 2048, 8 heads / 1 KV head x 256, MLP 16384 there; 8192 here), 4 layers
PI05_SIZE = training.Pi05Config(width=2048, depth=4, heads=8, kv_heads=1, head_dim=256, mlp_ratio=4)


def set_clock(wall: bool, device: str = "cpu") -> str:
    """Choose the timer. Default: CPU seconds of this thread with torch on 1 thread, which other
    jobs on a shared machine barely disturb (they steal wall time, not this thread's CPU time).
    `wall`: wall-clock seconds with torch's default threads (use on an otherwise idle machine).
    On CUDA: wall clock, synchronizing the device at every reading."""
    if device.startswith("cuda"):
        def synced():
            torch.cuda.synchronize()
            return time.perf_counter()

        CLOCK.update(name="cuda", fn=synced)
        return f"wall-clock seconds with the GPU synchronized at each reading ({torch.cuda.get_device_name()})"
    if wall:
        CLOCK.update(name="wall", fn=time.perf_counter)
        return f"wall-clock seconds, {torch.get_num_threads()} torch threads"
    torch.set_num_threads(1)
    return "CPU seconds of the benchmark thread (torch on 1 thread; `--wall` for wall clock)"


def interleaved(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Best (minimum) seconds per call of each fn over `reps`, alternating fns every repeat so
    any background load hits all fns alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    clock, times = CLOCK["fn"], {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = clock()
            fn()
            times[k].append(clock() - t)
    return {k: min(v) for k, v in times.items()}


def machine() -> str:
    if torch.cuda.is_available() and CLOCK["name"] == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = platform.machine()
    try:  # the model name says more than the architecture
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), no GPU, torch {torch.__version__}"


def write_block(name: str, body: str) -> None:
    """Replace (or append) this script's block inside the training/ section of RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end) + r"\n?", lambda _: block, text, flags=re.S)
    elif SECTION in text:
        head, _, tail = text.partition(SECTION)
        nxt = re.search(r"^## ", tail, flags=re.M)  # end of our section = next level-2 heading
        cut = nxt.start() if nxt else len(tail)
        text = head + SECTION + tail[:cut].rstrip() + "\n\n" + block + ("\n" + tail[cut:] if nxt else "")
    else:
        text = text.rstrip() + f"\n\n{SECTION}\n\n" + block
    RESULTS.write_text(text)


def parse_run_args(ap: argparse.ArgumentParser):
    """The options the training benchmarks share; returns (args, clock description, dtype, model config)."""
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch RESULTS.md")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="time wall clock with default threads (idle machine only)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", help="float32, or bfloat16 (on a GPU)")
    ap.add_argument("--pi05-size", action="store_true",
                    help="π0.5's widths (2048, head_dim 256, MLP 8192; 4 layers) and batch 8: for a GPU")
    args = ap.parse_args()
    clock = set_clock(args.wall, args.device)
    torch.manual_seed(0)
    cfg = PI05_SIZE if args.pi05_size else training.Pi05Config(width=512, depth=2, heads=8, kv_heads=1, head_dim=64,
                                                                 mlp_ratio=4)
    return args, clock, getattr(torch, args.dtype), cfg


def run_case(pol, samples, cfg, *, cam_tokens, reps):
    b, ref = len(samples), samples[0][2]
    g = torch.Generator().manual_seed(1)
    actions = torch.randn(b, cfg.action_horizon, cfg.action_dim, generator=g).to(ref)
    noise = torch.randn(actions.shape, generator=g).to(ref)
    t = torch.rand(b, generator=g).to(ref)
    x_t, u_t = training.flow_matching_targets(actions, noise, t)
    prefix_pad, mask = pad_samples(samples, max_cams_tokens=3 * cam_tokens, max_text=200)
    packed, cu = pack_samples(samples)

    def padded_step(attention):
        pol.zero_grad(set_to_none=True)
        p_out, s_out = pol.backbone.forward_dense(prefix_pad, mask, pol.embed_suffix(x_t, t), attention=attention)
        loss = (pol.action_out(s_out) - u_t).pow(2).mean() + 1e-3 * training.packed_token_mean(p_out[mask].pow(2))
        loss.backward()

    def packed_step():
        pol.zero_grad(set_to_none=True)
        p_out, s_out = pol.backbone.forward_packed(packed, cu, pol.embed_suffix(x_t, t))
        loss = (pol.action_out(s_out) - u_t).pow(2).mean() + 1e-3 * training.packed_token_mean(p_out.pow(2))
        loss.backward()

    real = int(mask.sum()) + b * cfg.action_horizon
    slots = mask.numel() + b * cfg.action_horizon
    sec = interleaved({"eager": lambda: padded_step("eager"), "sdpa": lambda: padded_step("sdpa"),
                       "packed": packed_step}, reps)
    return real, slots, sec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    args, clock, dtype, cfg = parse_run_args(ap)
    if args.pi05_size:
        args.batch = 8
    cam = 256
    if args.quick:
        cfg, cam, args.reps = training.Pi05Config(width=64, depth=1, heads=4, kv_heads=1, head_dim=16), 16, 1
    pol = training.Pi05Policy(cfg).to(args.device, dtype)
    cases = [
        ("3 cameras always present (as specified)", (3, 3)),
        ("1-3 cameras present (missing = pad; sensitivity check)", (1, 3)),
    ]
    load0 = os.getloadavg()[0]
    rows = []
    for label, cams in cases:
        samples = samples_to(make_pi05_samples(args.batch, cfg.width, cam_tokens=cam, cameras=cams, seed=len(rows)),
                             args.device, dtype)
        real, slots, sec = run_case(pol, samples, cfg, cam_tokens=cam, reps=args.reps)
        rows.append((label, real, slots, sec["eager"], sec["sdpa"], sec["packed"]))
        print(f"{label}: real {real} / padded {slots} tokens; padded eager {sec['eager']:.2f}s, padded SDPA "
              f"{sec['sdpa']:.2f}s, packed {sec['packed']:.2f}s -> {sec['eager'] / sec['packed']:.2f}x / "
              f"{sec['sdpa'] / sec['packed']:.2f}x", flush=True)  # fmt: skip
    load1 = os.getloadavg()[0]
    body = [
        "### Packed varlen vs padded dense-mask training throughput (π0.5-like)",
        "",
        f"`.venv/bin/python benchmarks/packed_vs_padded.py` — {datetime.date.today()}, {machine()}; "
        f"load average {load0:.1f} -> {load1:.1f} (other jobs shared the machine). Timer: {clock}; baseline and "
        f"packed alternate per repeat, best of {args.reps}.",
        "",
        f"Model: Pi05Policy width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads / {cfg.kv_heads} KV head "
        f"x {cfg.head_dim}, MLP x{cfg.mlp_ratio}, {args.dtype} on {args.device}, fwd+bwd, batch {args.batch}. Lengths: {cam} tokens per "
        f"camera (no scaling), text 5-200 uniform (baseline pads to 200), {cfg.action_horizon} action tokens.",
        "",
        "| case | real tokens | padded slots | padded eager s/step | padded SDPA s/step | packed s/step "
        "| real tok/s eager / SDPA / packed | packed vs eager | packed vs SDPA |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, real, slots, s_eager, s_sdpa, s_pack in rows:
        body.append(f"| {label} | {real} | {slots} | {s_eager:.2f} | {s_sdpa:.2f} | {s_pack:.2f} | "
                    f"{real / s_eager:,.0f} / {real / s_sdpa:,.0f} / {real / s_pack:,.0f} | "
                    f"**{s_eager / s_pack:.2f}x** | {s_sdpa / s_pack:.2f}x |")  # fmt: skip
    body += ["", "Effective tokens/s counts real (non-pad) prefix + action tokens only. Eager = openpi's PyTorch "
             "attention (`training.pi05.eager_padded`), the baseline the goal names; SDPA = the same padded batch "
             "and mask through torch SDPA."]
    print("\n".join(body))
    if not args.no_write and not args.quick:
        write_block("training:packed_vs_padded" + ("" if args.device == "cpu" else ":" + args.device),
                    "\n".join(body))


if __name__ == "__main__":
    main()
