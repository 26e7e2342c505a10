# .venv/bin/python benchmarks/sims_speed.py [--steps 100] [--no-libero] [--backends egl,osmesa] [--record]
"""Simulator speed behind the env adapters: env steps/s state-only and rendered, the adapters' fast rendering
(shadows, multisampling, LIBERO's reflections off) against MuJoCo's defaults, side by side in one process.

``--backends egl,osmesa`` runs the same rows once per headless GL backend, each in its own process (MuJoCo
reads ``MUJOCO_GL`` at import), one after the other, and records them side by side ("Rendering backend").

Meta-World (reach-v3, the scripted expert's actions): state-only, 64x64 fast, 64x64 default, 96x96 fast.
LIBERO (libero_object/3, zero actions): one env with both cameras at 64x64 under the adapter's settings, then
the camera renders of that same sim with MuJoCo's default settings vs the adapter's (renders/s per camera).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
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


class Timer:
    """Wall seconds and this process's CPU seconds (all its threads: llvmpipe renders on several)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def row(self, label: str, n: int) -> tuple[str, float, float]:
        """(label, items per wall second, CPU milliseconds per item)."""
        return (label, n / (time.perf_counter() - self.wall), 1000 * (time.process_time() - self.cpu) / n)


def metaworld_rows(steps: int) -> list[tuple[str, float, float]]:
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
        t, n = Timer(), 0
        while n < steps:
            obs, _, term, trunc, _ = env.step(expert.act({"observation.state": state[None]}, [""])[0])
            state, n = (obs["agent_pos"] if image else obs), n + 1
            if term or trunc:
                obs, _ = env.reset(seed=n)
                state = obs["agent_pos"] if image else obs
        rows.append(t.row(f"Meta-World reach-v3, {label}", n))
        env.close()
    return rows


def libero_rows(steps: int) -> list[tuple[str, float, float]]:
    import mujoco

    from training.sims.libero import LiberoEnv

    t = time.perf_counter()
    env = LiberoEnv("libero/libero_object/3", image=True)
    build = time.perf_counter() - t
    t = time.perf_counter()
    env.reset(seed=0)
    reset = time.perf_counter() - t
    env.step(np.zeros(7, np.float32))  # the first render makes the GL context: not timed
    t = Timer()
    for _ in range(steps):
        env.step(np.zeros(7, np.float32))
    rows = [t.row("LIBERO libero_object/3, 2 cameras 64x64, adapter settings", steps),
            ("LIBERO env build, seconds (not a rate)", build, float("nan")),
            ("LIBERO first reset, seconds (not a rate)", reset, float("nan"))]
    sim, ctx = env.raw.sim, env.raw.sim._render_context_offscreen
    n = max(10, steps // 2)
    for label, shadow, samples, flags in (("MuJoCo defaults", 4096, 4, 1), ("adapter settings", 0, 0, 0)):
        sim.model._model.vis.quality.shadowsize, sim.model._model.vis.quality.offsamples = shadow, samples
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()
        for flag in (mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SHADOW):
            ctx.scn.flags[flag] = flags
        sim.render(camera_name="agentview", width=64, height=64)
        t = Timer()
        for _ in range(n):
            sim.render(camera_name="agentview", width=64, height=64)
        rows.append(t.row(f"LIBERO agentview 64x64 renders, {label}", n))
    env.close()
    return rows


def backend_rows(backends: list[str], steps: int, libero_steps: int, libero: bool, repeats: int
                 ) -> dict[str, list[list[tuple[str, float]]]]:
    """{backend: [rows of each repeat]}, each measured in a fresh process with ``MUJOCO_GL`` set; the backends
    interleave (egl, osmesa, egl, ...) so that a change in background load hits both."""
    out: dict = {b: [] for b in backends}
    for _ in range(repeats):
        for b in backends:
            cmd = [sys.executable, __file__, "--one", "--steps", str(steps), "--libero-steps", str(libero_steps)]
            proc = subprocess.run(cmd + ([] if libero else ["--no-libero"]),
                                  env={**os.environ, "MUJOCO_GL": b, "PYOPENGL_PLATFORM": b}, capture_output=True,
                                  text=True)
            if proc.returncode:
                raise RuntimeError(f"MUJOCO_GL={b}: {proc.stderr.strip().splitlines()[-1:]}")
            out[b].append([tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])])
    return out


def _best(label: str, values: list[float]) -> float:
    """Background load only slows a run down: the best of the repeats (fastest rate, shortest time)."""
    return min(values) if "seconds" in label else max(values)


def compare_backends(args) -> None:
    backends = [b.strip() for b in args.backends.split(",")]
    before = load()
    runs = backend_rows(backends, args.steps, args.libero_steps, not args.no_libero, args.repeats)
    rows = {b: [(label, _best(label, [r[i][1] for r in runs[b]]), float(np.median([r[i][2] for r in runs[b]])))
                for i, (label, *_) in enumerate(runs[b][0])] for b in backends}
    first = backends[0]
    head = ("| what | " + " | ".join(f"{b}: per wall s" for b in backends) + " | " + " | ".join(
        f"{b} / {first}" for b in backends[1:]) + " | " + " | ".join(f"{b}: CPU ms each" for b in backends) + " | "
        + " | ".join(f"CPU {first} / {b}" for b in backends[1:]) + " |")
    lines = [f"Command: `.venv/bin/python benchmarks/sims_speed.py --steps {args.steps} --backends {args.backends}"
             f"{' --no-libero' if args.no_libero else ''} --libero-steps {args.libero_steps} --repeats {args.repeats}"
             f"{' --record' if args.record else ''}` (each backend in its own process; {args.repeats} rounds egl, "
             f"osmesa, egl, ...; each cell the best of its {args.repeats})",
             f"Machine: {machine()}; both backends are Mesa's llvmpipe software renderer; load average before "
             f"/ after: {before} / {load()}", "", head, "|---|" + "---:|" * (head.count("|") - 2)]
    for i, (label, *_) in enumerate(rows[first]):
        vals, cpu = [rows[b][i][1] for b in backends], [rows[b][i][2] for b in backends]
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in vals) + " | "
                     + " | ".join(f"{v / vals[0]:.2f}x" for v in vals[1:]) + " | "
                     + " | ".join("" if math.isnan(c) else f"{c:.1f}" for c in cpu) + " | "
                     + " | ".join("" if math.isnan(c) else f"{cpu[0] / c:.2f}x" for c in cpu[1:]) + " |")
    lines += ["", "Per wall s: env steps/s (renders/s for the render-only rows), the best of the rounds (background load "
              "only slows a run down); CPU ms each: the process's CPU time (all threads) per step or render, the median "
              "of the rounds, which background load disturbs far less. Without a GPU EGL vendor the adapters "
              "default to osmesa (`training/sims/_setup.py::default_backend`); `MUJOCO_GL` overrides."]
    body = "\n".join(lines)
    print(body)
    if args.record:
        record("Rendering backend", body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-libero", action="store_true")
    ap.add_argument("--libero-steps", type=int, default=None, help="LIBERO steps (default: steps / 5, at least 10)")
    ap.add_argument("--repeats", type=int, default=3, help="--backends: rounds over the backends")
    ap.add_argument("--backends", default=None, help="e.g. egl,osmesa: the rows once per MUJOCO_GL, side by side")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child of --backends: rows as JSON
    ap.add_argument("--record", action="store_true", help='replace the "Simulators" (or "Rendering backend") '
                                                          'section of RESULTS.md')
    args = ap.parse_args()
    args.libero_steps = args.libero_steps or max(10, args.steps // 5)
    if args.backends:
        return compare_backends(args)
    from training.sims import configure_rendering

    backend = configure_rendering()
    before = load()
    rows = metaworld_rows(args.steps)
    if not args.no_libero:
        rows += libero_rows(args.libero_steps)
    if args.one:
        print(json.dumps(rows))
        return
    lines = [f"Command: `.venv/bin/python benchmarks/sims_speed.py --steps {args.steps}"
             f"{' --no-libero' if args.no_libero else ''}{' --record' if args.record else ''}`",
             f"Machine: {machine()}, MUJOCO_GL={backend} (software rendering, no GPU); load average before / after: "
             f"{before} / {load()}", "", "| what | per second |", "|---|---:|"]
    lines += [f"| {label} | {v:.1f} |" for label, v, _ in rows]
    d = {label: v for label, v, _ in rows}
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
