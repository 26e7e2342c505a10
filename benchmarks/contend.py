# flock /work/notes/bench.lock .venv/bin/python benchmarks/contend.py [--seconds 12] [--rounds 2]
"""Why each stage of the sim-sized LIBERO run slows down when the other runs beside it (issue 16).

Two worker processes, each pinned to one core (``os.sched_setaffinity``; one thread each), run a load for the
same ``--seconds`` at the same time; each reports its units of work, wall and process CPU time. A load beside
``idle`` is its cost alone; the ratio of its CPU-ms per unit beside another load to that is the slowdown the
other load causes, with scheduling excluded (each has a core to itself). The host's steal time (``/proc/stat``)
is read over every pair: time the hypervisor ran something else on our vCPUs.

Loads (core 0 / core 1):
- ``simroll``: ``sim`` plus the rollout worker's inference (the 4096-wide policy on the 2 observations) before
  every step, in the same process: what the core does that holds the simulator and the inference serving it.
- ``sim``: the env worker's work: a SyncVectorEnv of 2 LIBERO ``libero_object/3`` envs, both cameras rendered,
  random actions, reset every 40 steps; a unit = one vector step.
- ``wide``: the sim-sized learner's update loop: the 4096-wide actor-critic (CNN on agentview) on a 40-step
  micro-batch, forward + backward, an Adam step (grad-norm clipped) every 2 micro-batches (one PPO epoch over
  the 80-step batch); a unit = one micro-batch. Its weights (2 x 64 MiB layers) + grads + Adam state stream from
  memory every unit: 4x the 32 MiB L3.
- ``narrow``: the same FLOPs per unit from a cache-friendlier shape: 1024 wide (16x fewer weights) on 16x the
  rows per micro-batch (640), so every weight read does 16x the work.
- ``stream``: memory bandwidth only: copy a 256 MiB array (numpy) into another; a unit = one copy.
- ``l2``: compute in L2: a 256x256 fp32 matmul (768 KiB); a unit = 200 of them.
- ``spin``: compute in registers / L1: a pure-Python loop; a unit = 1e5 iterations.
``spin`` beside ``sim`` slowing ``sim`` would mean the two vCPUs share one physical core (SMT siblings on the
host); ``stream`` would mean memory bandwidth; ``l2`` / ``wide`` vs ``narrow`` separate L3 capacity from
bandwidth.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
ENV_ID = "libero/libero_object/3"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LP_NUM_THREADS": "1"}


def steal() -> float:
    """Seconds of steal time over all vCPUs since boot (``/proc/stat``, USER_HZ = 100)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / 100.0


PARTS: dict = {}  # CPU-s of a unit's parts (simroll: "sim", "infer")


def _sim(pcfg: dict | None = None):
    """``pcfg``: also the rollout's inference (the 4096-wide policy on the 2 envs' observations) after every
    step, in this process: what the core holding the simulator and the inference does."""
    from training.rl.envs import make_vector_env, to_features, get_family

    env = make_vector_env(ENV_ID, 2, image=True, max_episode_steps=40, kwargs={"reward": "dense"})
    obs, _ = env.reset(seed=[0, 1])
    rng = np.random.default_rng(0)
    state = {"n": 0, "obs": obs}
    policy = None
    if pcfg is not None:
        import torch

        from training.rl.policy import GaussianActorCritic

        torch.manual_seed(0)
        policy = GaussianActorCritic(**pcfg).eval()

    def unit():
        c = time.process_time()
        if policy is not None:
            policy.act_with_logprob(to_features(state["obs"], get_family(ENV_ID)), np.arange(2) + state["n"])
            c1 = time.process_time()
            PARTS["infer"] = PARTS.get("infer", 0.0) + c1 - c
            c = c1
        state["obs"] = env.step(rng.uniform(-1, 1, (2, 7)).astype(np.float32))[0]
        state["n"] += 1
        if state["n"] % 40 == 0:
            state["obs"] = env.reset(seed=[state["n"], state["n"] + 1])[0]
        PARTS["sim"] = PARTS.get("sim", 0.0) + time.process_time() - c
    return unit


def _learner(pcfg: dict, hidden: int, rows: int):
    import torch

    from training.rl.policy import GaussianActorCritic

    torch.manual_seed(0)
    pol = GaussianActorCritic(**{**pcfg, "hidden": hidden})
    opt = torch.optim.Adam(pol.parameters(), lr=3e-5, eps=1e-5)
    g = torch.Generator().manual_seed(0)
    obs = {}
    for name, dim, *_ in pcfg["state_features"]:
        obs[name] = torch.rand(rows, dim, generator=g)
    obs[pcfg["image_feature"]] = torch.randint(0, 255, (rows, 64, 64, 3), dtype=torch.uint8, generator=g)
    raw = torch.rand(rows, len(pcfg["action_low"]), generator=g)
    ret = torch.rand(rows, generator=g)
    state = {"n": 0}

    def unit():
        logp, ent, value = pol.evaluate_actions(obs, raw)
        loss = -(logp.mean()) - 0.01 * ent.mean() + 0.5 * ((value - ret) ** 2).mean()
        (loss * 0.5).backward()
        state["n"] += 1
        if state["n"] % 2 == 0:
            torch.nn.utils.clip_grad_norm_(pol.parameters(), 0.5)
            opt.step()
            opt.zero_grad()
    return unit


def _stream():
    a, b = np.ones(64 << 20, np.float32), np.zeros(64 << 20, np.float32)

    def unit():
        np.copyto(b, a)
    return unit


def _l2():
    import torch

    x, y = torch.rand(256, 256), torch.rand(256, 256)

    def unit():
        for _ in range(200):
            torch.mm(x, y)
    return unit


def _spin():
    def unit():
        s = 0
        for i in range(100_000):
            s += i
    return unit


def build(name: str, pcfg: dict):
    if name == "sim":
        return _sim()
    if name == "simroll":
        return _sim(pcfg)
    if name == "wide":
        return _learner(pcfg, 4096, 40)
    if name == "narrow":
        return _learner(pcfg, 1024, 640)
    return {"stream": _stream, "l2": _l2, "spin": _spin}[name]()


def worker(cpu: int, conn, pcfg: dict) -> None:
    os.sched_setaffinity(0, {cpu})
    import torch

    torch.set_num_threads(1)
    loads = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, seconds = msg
        if name != "idle" and name not in loads:
            loads[name] = build(name, pcfg)
            loads[name]()  # warm: first render makes the GL context, first step allocates Adam's state
        conn.send("ready")
        conn.recv()
        PARTS.clear()
        t, c, n = time.perf_counter(), time.process_time(), 0
        if name == "idle":
            time.sleep(seconds)
        else:
            while time.perf_counter() - t < seconds:
                loads[name]()
                n += 1
        conn.send({"units": n, "wall": time.perf_counter() - t, "cpu": time.process_time() - c, "parts": dict(PARTS)})


PAIRS = [("sim", "idle"), ("sim", "spin"), ("sim", "l2"), ("sim", "stream"), ("sim", "wide"), ("sim", "narrow"),
         ("idle", "wide"), ("idle", "narrow"), ("idle", "stream"), ("idle", "spin"), ("idle", "l2")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pairs", default=None, help="comma-separated a/b pairs (default: all)")
    ap.add_argument("--out", default=None, help="write the raw results here (JSON)")
    args = ap.parse_args()
    os.environ.update(ONE_THREAD)
    from training.sims import configure_libero, configure_rendering

    configure_rendering()
    configure_libero()
    from training.rl.policy import policy_config

    pcfg = policy_config(ENV_ID, image=True, hidden=4096, image_size=24, env_kwargs={"reward": "dense"})
    pairs = [tuple(p.split("/")) for p in args.pairs.split(",")] if args.pairs else PAIRS
    ctx = mp.get_context("spawn")
    ends = []
    for cpu in (0, 1):
        a, b = ctx.Pipe()
        p = ctx.Process(target=worker, args=(cpu, b, pcfg), daemon=True)
        p.start()
        ends.append((a, p))
    before = os.getloadavg()
    rows = []
    for r in range(args.rounds):
        for pair in pairs:
            for (conn, _), name in zip(ends, pair):
                conn.send((name, args.seconds))
            for conn, _ in ends:
                assert conn.recv() == "ready"
            s0 = steal()
            for conn, _ in ends:
                conn.send("go")
            res = [conn.recv() for conn, _ in ends]
            rows.append({"round": r, "pair": pair, "res": res, "steal_s": steal() - s0, "load": os.getloadavg()[0]})
            print(f"round {r} {pair[0]:>6} | {pair[1]:<6}: " + " | ".join(
                f"{1000 * x['cpu'] / max(x['units'], 1):8.2f} CPU-ms {1000 * x['wall'] / max(x['units'], 1):8.2f} "
                f"wall-ms/unit ({x['units']})" + "".join(f" {k} {1000 * v / max(x['units'], 1):.1f}"
                                                         for k, v in x["parts"].items()) for x in res) + f"; steal {rows[-1]['steal_s']:.2f} s", flush=True)
    for conn, p in ends:
        conn.send(None)
        p.join(10)
    after = os.getloadavg()
    # per load and core: CPU-ms per unit alone (beside idle) and beside each other load, median over rounds
    alone = {}
    for row in rows:
        for side, (name, other) in enumerate((row["pair"], row["pair"][::-1])):
            x = row["res"][side]
            if name != "idle" and other == "idle" and x["units"]:
                alone.setdefault(name, []).append(x["cpu"] / x["units"])
    print(f"\nload before {before[0]:.2f}/{before[1]:.2f}, after {after[0]:.2f}/{after[1]:.2f}")
    print("| load | beside | CPU-ms per unit | vs alone | wall-ms per unit | steal s |")
    print("|---|---|---|---|---|---|")
    table = {}
    for row in rows:
        for side, (name, other) in enumerate((row["pair"], row["pair"][::-1])):
            x = row["res"][side]
            if name == "idle" or not x["units"]:
                continue
            table.setdefault((name, other), []).append((x["cpu"] / x["units"], x["wall"] / x["units"], row["steal_s"]))
    for (name, other), v in table.items():
        cpu, wall, st = (float(np.median([t[i] for t in v])) for i in range(3))
        base = float(np.median(alone[name])) if name in alone else float("nan")
        print(f"| {name} | {other} | {1000 * cpu:.2f} | {cpu / base:.3f}x | {1000 * wall:.2f} | {st:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "load_before": before, "load_after": after}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
