# .venv/bin/python benchmarks/sims_speed.py [--steps 100] [--no-libero] [--record]
"""Simulator speed behind the env adapters: env steps/s state-only and rendered, the adapters' fast rendering
(shadows, multisampling, LIBERO's reflections off) against MuJoCo's defaults, side by side in one process.

Meta-World (reach-v3, the scripted expert's actions): state-only, 64x64 fast, 64x64 default, 96x96 fast.
LIBERO (libero_object/3, zero actions): one env with both cameras at 64x64 under the adapter's settings, then
the camera renders of that same sim with MuJoCo's default settings vs the adapter's (renders/s per camera).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _report import machine, record  # noqa: E402


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def metaworld_rows(steps: int) -> list[tuple[str, float]]:
    from training.sims.experts import build_expert
    from training.sims.metaworld import MetaWorldEnv

    expert = build_expert("metaworld/reach-v3")
    rows = []
    for label, image, size, fast in (("state only", False, 64, True), ("rendered 64x64, adapter settings", True, 64, True),
                                     ("rendered 64x64, MuJoCo defaults (shadows, 4x MSAA)", True, 64, False),
                                     ("rendered 96x96, adapter settings", True, 96, True)):
        env = MetaWorldEnv("reach-v3", image=image, size=size)
        if not fast:
            env.raw.model.vis.quality.shadowsize, env.raw.model.vis.quality.offsamples = 4096, 4
        obs, _ = env.reset(seed=0)
        state = obs["agent_pos"] if image else obs
        env.step(np.zeros(4, np.float32))  # the first render makes the GL context: not timed
        t, n = time.perf_counter(), 0
        while n < steps:
            obs, _, term, trunc, _ = env.step(expert.act({"observation.state": state[None]}, [""])[0])
            state, n = (obs["agent_pos"] if image else obs), n + 1
            if term or trunc:
                obs, _ = env.reset(seed=n)
                state = obs["agent_pos"] if image else obs
        rows.append((f"Meta-World reach-v3, {label}", n / (time.perf_counter() - t)))
        env.close()
    return rows


def libero_rows(steps: int) -> list[tuple[str, float]]:
    import mujoco

    from training.sims.libero import LiberoEnv

    t = time.perf_counter()
    env = LiberoEnv("libero/libero_object/3", image=True)
    build = time.perf_counter() - t
    t = time.perf_counter()
    env.reset(seed=0)
    reset = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        env.step(np.zeros(7, np.float32))
    rows = [(f"LIBERO libero_object/3, 2 cameras 64x64, adapter settings (build {build:.0f} s, reset {reset:.1f} s)",
             steps / (time.perf_counter() - t))]
    sim, ctx = env.raw.sim, env.raw.sim._render_context_offscreen
    n = max(5, steps // 4)
    for label, shadow, samples, flags in (("MuJoCo defaults", 4096, 4, 1), ("adapter settings", 0, 0, 0)):
        sim.model._model.vis.quality.shadowsize, sim.model._model.vis.quality.offsamples = shadow, samples
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()
        for flag in (mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SHADOW):
            ctx.scn.flags[flag] = flags
        sim.render(camera_name="agentview", width=64, height=64)
        t = time.perf_counter()
        for _ in range(n):
            sim.render(camera_name="agentview", width=64, height=64)
        rows.append((f"LIBERO agentview 64x64 renders, {label}", n / (time.perf_counter() - t)))
    env.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-libero", action="store_true")
    ap.add_argument("--record", action="store_true", help='replace the "Simulators" section of RESULTS.md')
    args = ap.parse_args()
    from training.sims import configure_rendering

    backend = configure_rendering()
    before = load()
    rows = metaworld_rows(args.steps)
    if not args.no_libero:
        rows += libero_rows(max(10, args.steps // 5))
    lines = [f"Command: `.venv/bin/python benchmarks/sims_speed.py --steps {args.steps}"
             f"{' --no-libero' if args.no_libero else ''}{' --record' if args.record else ''}`",
             f"Machine: {machine()}, MUJOCO_GL={backend} (software rendering, no GPU); load average before / after: "
             f"{before} / {load()}", "", "| what | per second |", "|---|---:|"]
    lines += [f"| {label} | {v:.1f} |" for label, v in rows]
    d = dict(rows)
    fast, slow = d["Meta-World reach-v3, rendered 64x64, adapter settings"], d[
        "Meta-World reach-v3, rendered 64x64, MuJoCo defaults (shadows, 4x MSAA)"]
    lines += ["", f"Meta-World rendered steps/s, adapter settings vs MuJoCo defaults: {fast / slow:.2f}x."]
    if not args.no_libero:
        lines.append(f"LIBERO renders/s, adapter settings vs MuJoCo defaults: "
                     f"{d['LIBERO agentview 64x64 renders, adapter settings'] / d['LIBERO agentview 64x64 renders, MuJoCo defaults']:.2f}x.")
    body = "\n".join(lines)
    print(body)
    if args.record:
        record("Simulators", body)


if __name__ == "__main__":
    main()
