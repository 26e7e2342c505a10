# nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/closed_loop.py --record   (or: make proof)
"""The closed loop on Meta-World, and proof that it learns: scripted-expert demos -> lake -> pack -> SFT of the
reference VLA -> ``lake eval`` on held-out seeds, beside the untrained VLA (step 0) and the expert; then RL
(aa mode, ``training.rl``) from a supervised checkpoint, its trajectories landing in the lake as versions.

Per task (``--tasks``), in its own folder under ``--workdir`` (reruns reuse what is there: demos, checkpoints,
finished results): demos with action noise (state only: no rendering) -> ingest -> pack (state + task text, no
camera; action chunks) -> SFT with a checkpoint kept every quarter (the learning curve) -> evaluations. Each
task's results are written to ``<task>/result.json`` as soon as it finishes, and with ``--record`` the RESULTS.md
section and the plots are rebuilt from every result present, so a long run saves what it has.

Held out: demos use env seeds derived from seed 0 (``lake eval``'s derivation), checkpoint selection seed 2000
(validation goals), evaluations seed 1000, RL seeds its env workers from its own run seed: every evaluation goal
is one the policy never trained on and never chose a checkpoint on (the script checks the three goal seed sets
are disjoint). The kept checkpoints (the learning curve) are evaluated on the validation goals only; the
held-out evaluation runs once, on the checkpoint with the best validation success (early stopping). Success =
Meta-World's ``info["success"]`` at any step before the time limit; rates carry Wilson 95% intervals.

LIBERO (``libero_goal-6``: "put the cream cheese in the bowl"; its own RESULTS.md section): demos of the scripted
pick-place expert (``training.sims.libero_expert``) on freshly sampled scenes, evaluations on LIBERO's 50
recorded init states (episode i from init state i), the state with the objects' positions (``objects=True``).
No validation selection there: the held-out rows are the last checkpoint's, and the curve's intermediate points
(``--curve-episodes``) are on the recorded init states, for the plot only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _loop import (DEMO_SEED, EVAL_SEED, RL_REWARD_SCALE, TASKS, VAL_SEED, evaluate_ckpt, pct,  # noqa: E402
                   rl_objective, task_env_id, write_demos)
from _report import RESULTS, machine, record  # noqa: E402
from training.sims.metaworld_sft import HORIZON, INPUTS, METAWORLD_VLA as MODEL, SFT_LR, metaworld_recipe  # noqa: E402

SECTION = "Closed loop (Meta-World): SFT and RL learn"
LIBERO_SECTION = "LIBERO closed loop: SFT on scripted-expert demos learns"
VLA_SECTION = "Closed loop (Meta-World): RL fine-tunes the VLA itself"
CONTROL_MIN_RETURN = 1e9  # --rl-rwr-min-return at or above this (returns here are <= 1.5) keeps no RL row: a control
METAWORLD_TASKS = [n for n, spec in TASKS.items() if "env_id" not in spec]
VLA_EARLIER = HERE / "closed_loop_rl_vla_earlier.md"  # the VLA-RL section's earlier rows, kept as rendered


def _held_out(n_demos: int, n_eval: int, n_val: int = 0) -> None:
    """Raise if demo, validation and held-out evaluation goals (env seeds) overlap."""
    from training.evaluate import _env_seed

    sets = {name: {_env_seed(seed, i) for i in range(n)}
            for name, seed, n in (("demo", DEMO_SEED, n_demos), ("evaluation", EVAL_SEED, n_eval),
                                  ("validation", VAL_SEED, n_val))}
    for a, b in (("evaluation", "demo"), ("validation", "demo"), ("evaluation", "validation")):
        if clash := sets[a] & sets[b]:
            raise RuntimeError(f"{a} env seeds {sorted(clash)} are also {b} seeds")


def _select(points: list[dict]) -> dict:
    """The validation point with the most successes; the earliest on a tie (early stopping)."""
    return max(points, key=lambda p: (p["k"], -p["step"]))


def run_task(name: str, args, root: Path) -> dict:
    """Demos -> pack -> SFT -> evaluations for one task; returns (and writes) its result dict."""
    import lake
    from training.sft import SFTConfig, train
    from training.sims.experts import save_expert

    spec = {**TASKS[name], **{k: v for k, v in (("demos", args.demos), ("sft_steps", args.sft_steps)) if v}}
    model = {**MODEL, **spec.get("model", {}), **{k: v for k, v in (("width", args.width), ("depth", args.depth)) if v}}
    env_id, work = task_env_id(name), root / name
    work.mkdir(parents=True, exist_ok=True)
    _held_out(spec["demos"], args.episodes, args.val_episodes)
    t0 = time.perf_counter()
    print(f"[{name}] demos ...", flush=True)
    demo = write_demos(work, env_id, spec["demos"], args.noise, spec.get("batch_size", 10), spec.get("demo_env_kwargs"))
    uri = str(work / "lake")
    recipe = metaworld_recipe("closed_loop")
    packed = lake.open(uri).pack(recipe)
    lk = lake.open(uri)
    table = packed.table
    steps = spec["sft_steps"]
    every = max(1, steps // (args.ckpt_points or spec.get("ckpt_points", 4)))
    common = dict(lake=uri, recipe=recipe.hash, lr=SFT_LR, warmup=50, log_every=100, model=model, seed=args.sft_seed)
    print(f"[{name}] SFT {steps} steps ...", flush=True)
    t_sft = time.perf_counter()
    sft = train(SFTConfig(out_dir=str(work / "sft"), steps=steps, ckpt_every=every, keep_checkpoints=True, **common),
                progress=False)
    sft_s = time.perf_counter() - t_sft
    untrained = train(SFTConfig(out_dir=str(work / "sft_0"), steps=0, **common), progress=False)["checkpoint"]
    expert = save_expert(work / "expert.pt", env_id, noise=0.0)
    ms = spec["max_steps"]
    if spec.get("eval_init_states"):  # LIBERO: the last checkpoint (see the module docstring)
        print(f"[{name}] evaluations ...", flush=True)
        curve = []
        for s in range(every, steps, every):  # the final checkpoint is evaluated with the full count below
            ckpt = work / "sft" / f"step_{s:06d}.pt"
            curve.append({"step": s, **evaluate_ckpt(ckpt, env_id, args.curve_episodes, uri, ms, spec)})
            print(f"[{name}]   step {s}: {curve[-1]['k']}/{curve[-1]['n']}", flush=True)
        rows = {"untrained": evaluate_ckpt(untrained, env_id, args.episodes, uri, ms, spec),
                "sft": evaluate_ckpt(sft["checkpoint"], env_id, args.episodes, uri, ms, spec),
                "expert": evaluate_ckpt(expert, env_id, args.episodes, uri, ms, spec)}
        curve = [{"step": 0, **rows["untrained"]}, *curve, {"step": steps, **rows["sft"]}]
        chosen, selection = {"checkpoint": sft["checkpoint"]}, None
    else:
        print(f"[{name}] validation (env seed {VAL_SEED}) of every kept checkpoint ...", flush=True)
        curve = [{"step": 0, **evaluate_ckpt(untrained, env_id, args.val_episodes, uri, ms, spec, seed=VAL_SEED)}]
        for s in [*range(every, steps, every), steps]:
            ckpt = work / "sft" / f"step_{s:06d}.pt" if s < steps else sft["checkpoint"]
            curve.append({"step": s, **evaluate_ckpt(ckpt, env_id, args.val_episodes, uri, ms, spec, seed=VAL_SEED)})
            print(f"[{name}]   step {s}: {curve[-1]['k']}/{curve[-1]['n']}", flush=True)
        chosen = _select(curve[1:])
        selection = {"seed": VAL_SEED, "episodes": args.val_episodes, "step": chosen["step"]}
        print(f"[{name}] held-out evaluation (env seed {EVAL_SEED}) of step {chosen['step']} ...", flush=True)
        rows = {"untrained": evaluate_ckpt(untrained, env_id, args.episodes, uri, ms, spec),
                "sft": evaluate_ckpt(chosen["checkpoint"], env_id, args.episodes, uri, ms, spec),
                "expert": evaluate_ckpt(expert, env_id, args.episodes, uri, ms, spec)}
    losses = sft["losses"]
    result = {
        "task": name, "env_id": env_id, "inputs": spec.get("inputs", INPUTS), "demos": spec["demos"],
        "noise": args.noise, **demo, "env_kwargs": spec.get("env_kwargs"),
        "eval_init_states": bool(spec.get("eval_init_states")),
        "sft_steps": steps, "sft_seconds": sft_s, "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "model": model, "sft_seed": args.sft_seed, **({"selection": selection} if selection else {}), "horizon": HORIZON, "max_steps": ms, "episodes": args.episodes,
        "pack": {"version": packed.version or lk.version, "table": table, "recipe": recipe.hash,
                 "samples": packed.samples},
        "checkpoint": {"path": chosen["checkpoint"], "lake_version": sft["lineage"]["lake_version"],
                       "packed_table": sft["lineage"]["packed_table"]},
        "rows": rows, "curve": curve, "seconds": time.perf_counter() - t0,
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "command": getattr(args, "command", None),
    }
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


def run_rl(name: str, args, root: Path) -> dict:
    """Behaviour cloning of the RL actor-critic on the task's demos, then aa RL from it in segments (a checkpoint
    and an evaluation after each), trajectories into the task's lake."""
    from training.rl.bc import behaviour_clone

    env_id, work = f"metaworld/{name}", root / name
    uri = str(work / "lake")
    ms = TASKS[name]["max_steps"]
    if not (work / "lake").exists():
        write_demos(work, env_id, TASKS[name]["demos"], args.noise)
    print(f"[{name}] RL: behaviour cloning on {args.rl_demos} demos ...", flush=True)
    bc = behaviour_clone(uri, env_id, out=str(work / "rl" / "bc.pt"), steps=args.bc_steps,
                         episodes=args.rl_demos, reward_scale=RL_REWARD_SCALE)
    start = evaluate_ckpt(bc["checkpoint"], env_id, args.episodes, uri, ms)
    print(f"[{name}]   BC: {start['k']}/{start['n']}", flush=True)
    lr = args.rl_lr or 5e-4
    seg = _rl_segments(name, args, work / "rl", uri, bc["checkpoint"], start, lr, {"algo.epochs": 2})
    result = {"task": name, "env_id": env_id, "bc": bc, "bc_demos": args.rl_demos, "start": start,
              "reward": args.rl_reward, "command": getattr(args, "command", None), **seg,
              "versions": args.rl_segments * args.rl_versions, "lr": lr, "max_steps": ms}
    (work / "rl_result.json").write_text(json.dumps(result, indent=1))
    return result


def run_rl_vla(name: str, args, root: Path) -> dict:
    """RL of the reference VLA itself (``training.rl.flow_policy``) from the task's SFT checkpoint (``--rl-init``:
    the validation-chosen one, or a kept step), acting as it will be evaluated: ``--rl-exec-steps`` actions of
    each chunk per plan (1: re-plan every env step; k > 1: one RL step executes k actions, the env option
    ``action_chunk``), segments as ``run_rl``; writes ``rl_vla_result.json`` (``rl_vla_exec<k>_result.json``)."""
    from training.checkpoint import read_header
    from training.rl.flow_policy import from_sft

    env_id, work = f"metaworld/{name}", root / name
    uri, ms = str(work / "lake"), TASKS[name]["max_steps"]
    sft_dir = work / ("sft" if not args.rl_sft_steps else f"sft_{args.rl_sft_steps}")
    if args.rl_sft_steps and not (sft_dir / "last.pt").exists():  # a deliberately short SFT run: room for RL
        from training.sft import SFTConfig, train

        print(f"[{name}] short SFT ({args.rl_sft_steps} steps) for the RL start ...", flush=True)
        train(SFTConfig(out_dir=str(sft_dir), steps=args.rl_sft_steps, ckpt_every=max(1, args.rl_sft_steps // 4),
                        keep_checkpoints=True, lake=uri, recipe=metaworld_recipe("closed_loop").hash, lr=SFT_LR,
                        warmup=min(50, args.rl_sft_steps // 4), log_every=100, model=MODEL, seed=args.sft_seed),
              progress=False)
    if args.rl_init == "chosen":
        if not (work / "result.json").exists():
            raise SystemExit(f"[{name}] no SFT result under {work}: run --tasks {name} first, or pass --rl-init STEP")
        init = json.loads((work / "result.json").read_text())["checkpoint"]["path"]
    else:
        init = str(sft_dir / f"step_{int(args.rl_init):06d}.pt")
    k, tag = args.rl_exec_steps, _vla_tag(args)
    start_ckpt = from_sft(init, str(work / tag / "start.pt"), env_id=env_id, rl_sigma=args.rl_sigma, exec_steps=k,
                          x0_zero=args.rl_x0_zero)
    print(f"[{name}] VLA RL from {init} (exec_steps {k}, sigma {args.rl_sigma}): held-out start ...", flush=True)
    start = evaluate_ckpt(start_ckpt, env_id, args.episodes, uri, ms)
    print(f"[{name}]   start: {start['k']}/{start['n']}", flush=True)
    lr = args.rl_lr or 3e-4
    objective = rl_objective(args.rl_reward)
    if k > 1:  # one RL step = one chunk: k actions, the chain's log-prob covers the chunk
        objective["env.kwargs"] = {**objective["env.kwargs"], "action_chunk": k}
    group = _rl_group(args, objective)
    head = read_header(init)
    demos = {}
    if args.rl_demo_coef:  # the SFT loss on the demos' packs, at the lake version the SFT run read
        demos = {"algo.demo_coef": args.rl_demo_coef, "algo.demo_lake": uri,
                 "algo.demo_recipe": metaworld_recipe("closed_loop").hash,
                 "algo.demo_version": (head.get("lineage") or {}).get("lake_version")}
    seg = _rl_segments(name, args, work / tag, uri, start_ckpt, start, lr,
                       {**objective, "algo.epochs": args.rl_epochs, "batching.max_batch_size": 8,
                        "algo.target_kl": getattr(args, "rl_target_kl", 0.0),
                        "algo.batch_trajectories": args.rl_batch, **group, **_rl_loss(args), **demos},
                       source=f"rl-vla/{name}", steps_per_row=k)
    result = {"task": name, "env_id": env_id, "policy": "vla", "init": init, "init_step": head.get("step"),
              "sigma": args.rl_sigma, "sft_lineage": head.get("lineage"), "demo_version": _demo_version(uri),
              "start": start, "reward": args.rl_reward, "command": getattr(args, "command", None), **seg,
              "versions": args.rl_segments * args.rl_versions, "lr": lr, "epochs": args.rl_epochs, "max_steps": ms,
              "exec_steps": k, "tag": tag, "batch_trajectories": args.rl_batch, "x0_zero": args.rl_x0_zero,
              "group_size": group.get("algo.group_size"), "rl_seed": getattr(args, "rl_seed", 1),
              "target_kl": getattr(args, "rl_target_kl", 0.0),
              "loss": args.rl_loss, **({"rwr_weight": args.rl_rwr_weight, "rwr_beta": args.rl_rwr_beta,
                                           "rwr_min_return": args.rl_rwr_min_return}
                                       if args.rl_loss == "flow_rwr" else {}), "demo_coef": args.rl_demo_coef}
    (work / f"{tag}_result.json").write_text(json.dumps(result, indent=1))
    return result


def _rl_group(args, objective: dict) -> dict:
    """GRPO group size overrides (``--rl-group``: rollouts per goal; the objective's 4 by default): the group
    size, and micro-batches of whole groups (the trainer consumes trajectories in micro-batches that must be
    multiples of it). Refuses a size the global batch is not a multiple of, or a reward without groups."""
    g = getattr(args, "rl_group", None)
    if not g:
        return {}
    if objective.get("algo.advantage") != "grpo":
        raise SystemExit(f"--rl-group {g}: the reward {args.rl_reward!r} has no GRPO groups")
    if g < 2 or args.rl_batch % g:
        raise SystemExit(f"--rl-group {g}: needs >= 2 and to divide --rl-batch ({args.rl_batch})")
    return {"algo.group_size": g, "algo.micro_batch_trajectories": max(4, g) if max(4, g) % g == 0 else g}


def _rl_loss(args) -> dict:
    """The trainer's objective for VLA RL: ``pg`` (PPO/GRPO on the chain's log-prob) or ``flow_rwr``
    (advantage-weighted flow matching on the executed chunks, ``training.rl.losses.flow_rwr``)."""
    loss = getattr(args, "rl_loss", "pg")
    if loss != "flow_rwr":
        return {"algo.loss": loss}
    return {"algo.loss": loss, "algo.rwr_weight": args.rl_rwr_weight, "algo.rwr_beta": args.rl_rwr_beta,
            "algo.rwr_min_return": args.rl_rwr_min_return}


def paired(start: str | None, end: str | None) -> dict | None:
    """Paired by goal (per-goal success strings of the same goals): both, lost (start only), gained (end only),
    and the exact McNemar p (two-sided binomial test of the discordant pairs at 1/2); None without both."""
    from math import comb

    if not start or not end or len(start) != len(end):
        return None
    both = sum(a == b == "1" for a, b in zip(start, end))
    lost = sum(a == "1" and b == "0" for a, b in zip(start, end))
    gained = sum(a == "0" and b == "1" for a, b in zip(start, end))
    n = lost + gained
    p = min(1.0, 2 * sum(comb(n, i) for i in range(min(lost, gained) + 1)) / 2 ** n) if n else 1.0
    return {"both": both, "lost": lost, "gained": gained, "p": p}


def _vla_tag(args) -> str:
    """The folder (and ``<tag>_result.json``) of one VLA-RL configuration: rl_vla (re-plan every step),
    rl_vla_exec<k> (chunks), plus ``_<--rl-name>`` when given (another run of the same act mode)."""
    k = getattr(args, "rl_exec_steps", 1)
    tag = "rl_vla" if k == 1 else f"rl_vla_exec{k}"
    return f"{tag}_{args.rl_name}" if getattr(args, "rl_name", None) else tag


def _demo_version(uri: str) -> int | None:
    """The lake version the expert demos landed in."""
    import lake

    return min((e.version for e in lake.open(uri).log() if "expert demos" in (e.message or "")), default=None)


def _rl_segments(name: str, args, out: Path, uri: str, start_ckpt: str, start: dict, lr: float, extra: dict,
                 source: str | None = None, steps_per_row: int = 1) -> dict:
    """``args.rl_segments`` aa runs, each resuming from the last checkpoint, an evaluation after each (the last on
    ``args.episodes``, the others on ``args.curve_episodes``); trajectories into the lake at ``uri``.
    ``steps_per_row``: env steps per trajectory row (an action chunk's k): env steps are counted as rows x k, an
    upper bound (an episode's last chunk stops early at success)."""
    import lake
    from training.rl import RLConfig, run, with_overrides

    env_id, ms = f"metaworld/{name}", TASKS[name]["max_steps"]
    select = getattr(args, "rl_select", "last") == "val"

    def val(ckpt) -> dict:  # a checkpoint on the validation goals (env seeds from VAL_SEED): what --rl-select reads
        ev = evaluate_ckpt(ckpt, env_id, args.val_episodes, uri, ms, seed=VAL_SEED)
        return {k: ev[k] for k in ("k", "n", "rate", "lo", "hi", "successes", "eval_version") if k in ev}

    curve = [{"env_steps": 0, "version": 0, **start, **({"val": val(start_ckpt)} if select else {})}]
    prev, env_steps, lake_versions, t_rl = start_ckpt, 0, [], 0.0
    for seg in range(args.rl_segments):
        done = out / f"segment_{seg + 1}.json"  # a rerun resumes after the last finished segment
        if done.exists():
            d = json.loads(done.read_text())
            curve.append(d["point"])
            env_steps, prev, t_rl = d["point"]["env_steps"], d["checkpoint"], t_rl + d["rl_seconds"]
            lake_versions.append(d["point"]["lake_version"])
            print(f"[{name}]   RL segment {seg + 1} done before: {done}", flush=True)
            continue
        cfg = with_overrides(RLConfig(), {
            "mode": "aa", "seed": getattr(args, "rl_seed", 1) + seg, "env.id": env_id, "env.max_episode_steps": ms,
            **rl_objective(args.rl_reward),
            "workers.env_workers": 2, "workers.envs_per_worker": 4, "algo.batch_trajectories": 16,
            "algo.micro_batch_trajectories": 4, "algo.train_steps": args.rl_versions, "algo.lr": lr,
            "algo.entropy_coef": 0.0, "batching.max_batch_size": 8,
            "policy.init_checkpoint": prev, "lake.uri": uri, "lake.source": source or f"rl/{name}", "lake.images": False,
            "lake.commit_every": 16, "checkpoint": str(out / f"rl_{seg + 1}.pt"), "timeout_s": 3600,
            "placement.env_worker.num_cpus": 0.2, "placement.rollout.num_cpus": 0.3,
            "placement.trainer.num_cpus": 0.3, "placement.lake_writer.num_cpus": 0.2, **extra,
        })
        t = time.perf_counter()
        rep = run(cfg)
        seg_s = time.perf_counter() - t
        t_rl += seg_s
        env_steps += rep.consumed_steps * steps_per_row
        lake_versions.append(rep.lake.lake_version if rep.lake else None)
        prev = rep.checkpoint
        last = seg + 1 == args.rl_segments
        ev = evaluate_ckpt(prev, env_id, args.episodes if last else args.curve_episodes, uri, ms)
        curve.append({"env_steps": env_steps, "version": (seg + 1) * args.rl_versions,
                      "lake_version": lake_versions[-1], "produced": rep.produced, **ev, "checkpoint": prev,
                      **({"val": val(prev)} if select else {})})
        done.write_text(json.dumps({"point": curve[-1], "checkpoint": prev, "rl_seconds": seg_s,
                                    "run_id": rep.run_id, "history": _jsonable(rep.history)}, indent=1))
        print(f"[{name}]   RL segment {seg + 1}: {env_steps} env steps, {ev['k']}/{ev['n']}", flush=True)
    if curve[-1]["n"] != args.episodes:  # the last segment was a run's intermediate point (a run cut short, resumed
        # with fewer segments): the end is its checkpoint on the full held-out goals, as every end is
        ev = evaluate_ckpt(prev, env_id, args.episodes, uri, ms)
        keep = {k: curve[-1][k] for k in ("env_steps", "version", "lake_version", "produced") if k in curve[-1]}
        curve[-1] = {**curve[-1], **ev, **keep, "intermediate": {k: curve[-1][k] for k in ("k", "n")}}
        print(f"[{name}]   end re-evaluated on {ev['n']} held-out goals: {ev['k']}/{ev['n']}", flush=True)
    end, selection = curve[-1], None
    if select:  # the checkpoint (start included) best on the validation goals, earliest on ties; then held-out
        if any("val" not in p for p in curve):
            raise SystemExit(f"[{name}] --rl-select val: segments were run without validation; use a new --rl-name")
        best = best_on_validation(curve)
        selection = {"seed": VAL_SEED, "episodes": args.val_episodes, "val": [p["val"]["k"] for p in curve],
                     "versions": [p["version"] for p in curve], "chosen_version": curve[best]["version"]}
        if best < len(curve) - 1:
            ckpt = start_ckpt if best == 0 else curve[best]["checkpoint"]
            end = {**curve[best], **evaluate_ckpt(ckpt, env_id, args.episodes, uri, ms)}
        print(f"[{name}]   chosen on validation: version {curve[best]['version']} "
              f"({curve[best]['val']['k']}/{args.val_episodes}), held-out {end['k']}/{end['n']}", flush=True)
    return {"end": end, "curve": curve, "env_steps": env_steps, "rl_seconds": t_rl, "selection": selection,
            "lake_versions": lake_versions, "lake_latest": lake.open(uri).version}


def _jsonable(rows) -> list[dict]:
    """The trainer's per-version rows (success, ratio, clip fraction ...) with plain numbers only."""
    return [{k: (float(v) if isinstance(v, float) else v) for k, v in r.items()
             if isinstance(v, (int, float, str, bool))} for r in rows]


def _v(version) -> str:
    """An eval's lake version; None = these exact episodes were recorded by an earlier identical run."""
    return f"v{version}" if version is not None else "(recorded earlier)"


def _plots(results: list[dict], rl: list[dict], out: Path, libero: list[dict] = ()) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot(name, series, xlabel, title):
        """success ± Wilson interval per series (label, x, curve points) into ``out/name``."""
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, x, c in series:
            ax.errorbar(x, [p["rate"] for p in c], yerr=[[p["rate"] - p["lo"] for p in c], [p["hi"] - p["rate"] for p in c]],
                        marker="o", capsize=3, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success on held-out goals")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

    made = []
    if results:
        plot("closed_loop_sft.png",
             [(f"{r['task']} (expert {r['rows']['expert']['rate']:.0%}){' validation goals' if 'selection' in r else ''}",
              [p["step"] for p in r["curve"]], r["curve"]) for r in results],
             "SFT steps", "Meta-World: VLA success vs SFT steps (95% Wilson)")
    if rl:
        plot("closed_loop_rl.png", [(r["task"], [p["env_steps"] for p in r["curve"]], r["curve"]) for r in rl],
             "RL env steps (consumed by the learner)",
             "Meta-World: aa RL from a behaviour-cloned checkpoint (95% Wilson)")
    if libero:
        plot("closed_loop_libero.png",
             [(f"{r['task']}: {r['inputs'].split(' (')[0]} (expert {r['rows']['expert']['rate']:.0%})",
               [p["step"] for p in r["curve"]], r["curve"]) for r in libero],
             "SFT steps", "LIBERO: VLA success vs SFT steps, recorded init states (95% Wilson)")
    return made


def libero_report(root: Path, command: str, load: str) -> str | None:
    """The LIBERO section from the LIBERO tasks' results under ``root`` (None when there are none)."""
    results = [json.loads(p.read_text()) for n in TASKS if n not in METAWORLD_TASKS
               and (p := root / n / "result.json").exists()]
    if not results:
        return None
    plots = _plots([], [], HERE, libero=results)
    commands = list(dict.fromkeys(r.get("command") or command for r in results))
    lines = [
        "Commands: " + "; ".join(f"`{c}`" for c in commands),
        f"Machine: {machine()}; {load} (shared with other engineers' jobs: wall times are inflated, not timings)",
        "",
        "Protocol: LIBERO ships no demonstrations here, so a scripted expert writes them "
        "(`training.sims.libero_expert`: a P-controller on the end-effector position over LIBERO's OSC_POSE delta "
        "actions, orientation held, gripper phases; it reads the object positions from the state). Demos: the "
        f"expert with Gaussian noise (std {results[0]['noise']}) on the position actions, on freshly sampled scenes "
        "(`init='sampled'`: objects placed from the task's BDDL regions as LIBERO made its init states, seeds from "
        f"seed {DEMO_SEED}), successful episodes kept, state only (nothing rendered). Evaluation: LIBERO's own 50 "
        "recorded init states of the task, episode i from init state i, none of them a demo scene; success = "
        "LIBERO's goal predicate (`check_success`) before the time limit; 95% Wilson intervals; every evaluation "
        "is a lake version (episodes + `evals` row).",
        f"Policy: the same lean recipe as the Meta-World proof (reference VLA, width {MODEL['width']}, depth "
        f"{MODEL['depth']}, `state_in_suffix`, {HORIZON}-step action chunks, {MODEL['exec_steps']} executed, "
        "AdamW lr 1e-3, cosine, one thread).",
        "",
        "| task | inputs | demos (frames) | SFT steps (wall) | untrained | SFT | expert | lineage: demos lake version / "
        "pack / checkpoint / eval versions (untrained, SFT, expert) |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for r in results:
        rows = r["rows"]
        rolled = f", expert success while recording {r['expert_success']:.0%} of {r['rolled_out']}" if r.get(
            "rolled_out") else ""
        lines.append(
            f"| `{r['env_id']}` ({describe_task(r['env_id'])}) | {r['inputs']} | {r['kept']} ({r['frames']}){rolled} "
            f"| {r['sft_steps']} ({r['sft_seconds'] / 60:.1f} min) | {pct(rows['untrained'])} | **{pct(rows['sft'])}** "
            f"| {pct(rows['expert'])} | v{r['lake_version']} / `{r['pack']['table']}` (v{r['pack']['version']}) / "
            f"`{r['task']}/sft/last.pt` (trained on v{r['checkpoint']['lake_version']}) / "
            f"{_v(rows['untrained']['eval_version'])}, {_v(rows['sft']['eval_version'])}, "
            f"{_v(rows['expert']['eval_version'])} |")
    lines += ["", "Learning curve (successes / episodes vs SFT steps; episode i starts from recorded init state i): "
              + "; ".join(f"{r['task']}: " + ", ".join(f"{p['step']}: {p['k']}/{p['n']}" for p in r["curve"])
                          for r in results)]
    lines += [f"\nNote ({r['task']}): {r['note']}" for r in results if r.get("note")]
    lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines)


def earlier_vla_rows(path: Path = VLA_EARLIER) -> dict[str, list[str]]:
    """The earlier runs' rendered parts (``## commands`` / ``## rows`` / ``## text`` blocks; ``#`` lines outside
    them are comments) of the VLA-RL section, whose result files are gone: {} when the file is absent. Raises
    ValueError for a row that is not a table row (it would end the table)."""
    if not path.exists():
        return {}
    parts: dict[str, list[str]] = {}
    block = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            block = parts.setdefault(line[3:].strip(), [])
        elif block is not None:
            block.append(line)
    rows = [r for r in parts.get("rows", []) if r.strip()]
    if bad := [r for r in rows if not r.startswith("| ")]:
        raise ValueError(f"{path}: not a table row: {bad[0][:60]!r}")
    return {"commands": [c for c in parts.get("commands", []) if c.strip()], "rows": rows,
            "text": parts.get("text", [])}


def vla_report(root: Path, command: str, load: str, out: Path = HERE, earlier: Path = VLA_EARLIER) -> str | None:
    """The VLA-RL section from the ``rl_vla*_result.json`` files under ``root`` (one row per file: re-plan every
    step, chunks; None when there are none), followed in its table, curves and notes by the earlier runs kept
    as rendered in ``earlier`` (``earlier_vla_rows``); its plot (the runs under ``root`` only) goes to ``out``."""
    rl = [r for n in METAWORLD_TASKS for r in sorted((json.loads(p.read_text()) for p in (root / n).glob(
        "rl_vla*_result.json")), key=lambda r: (r.get("exec_steps", 1), r.get("tag", "")))]
    if not rl:
        return None
    old = earlier_vla_rows(earlier)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trainer = {id(r): trainer_history(root, r) for r in rl}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    for r in rl:
        c = r["curve"]
        line = ax.errorbar([p["env_steps"] for p in c], [p["rate"] for p in c], marker="o", capsize=3,
                           label=_mode(r), yerr=[[p["rate"] - p["lo"] for p in c], [p["hi"] - p["rate"] for p in c]])
        if h := trainer[id(r)]:
            bx.plot([x["env_steps"] for x in h], [x["success_rate"] for x in h], marker=".",
                    color=line.lines[0].get_color(), label=_mode(r))
    ax.set_xlabel("RL env steps (consumed by the learner)")
    ax.set_ylabel("success on held-out goals")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=6)
    ax.set_title("Meta-World: aa RL of the VLA itself from its SFT checkpoint (95% Wilson)", fontsize=9)
    bx.set_xlabel("RL env steps (consumed by the learner)")
    bx.set_ylabel("rollout success per version")
    bx.set_ylim(-0.03, 1.03)
    bx.set_title("the learner's batches: training goals, noisy chain (what RL optimizes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "closed_loop_rl_vla.png", dpi=110)
    plt.close(fig)
    lines = [
        "Commands: " + "; ".join([*(f"`{c}`" for c in dict.fromkeys(r.get("command") or command for r in rl)),
                                  *old.get("commands", [])]),
        f"Machine: {machine()}; {load} (shared with other engineers' jobs: wall times are inflated, not timings)",
        "",
        "Policy: the SFT'd reference VLA itself (`training.rl.flow_policy.FlowPolicy`, same weights and state dict): "
        "for RL each Euler denoising step adds Gaussian noise, x_{k+1} = x_k - v(x_k, t_k)/N + sigma eps_k, so the "
        "chain is a Markov chain of Gaussians with an exact log-probability (the sum of the steps' Gaussian "
        "log-densities; ReinFlow / Flow-GRPO style); the trainer re-scores the stored chain under the current "
        "weights. Act mode (column): re-plan every env step (only the chunk's first action is executed), or exec "
        "k of 8 as SFT evaluation does (one RL step executes the chunk's first k actions in turn, the env option "
        "`action_chunk`; the chain's log-prob covers the chunk; env steps counted as RL steps x k, an upper bound: "
        "a successful episode's last chunk stops at the success step); the start checkpoint is evaluated in the "
        "same mode; evaluation uses the noise-free chain (`VLA.act`). No critic: GRPO over 4 rollouts per goal (or as many as the row says) of "
        "the reward in the table (success: 1 on the success step, the episode ends there; dense-grpo: Meta-World's "
        "shaped reward x 0.01 to the time limit), decoupled PPO clip 0.2, aa mode (2 env workers x 4 envs, "
        "trajectories per version in the table). Evaluation: the same 50 held-out goals (env seeds from 1000) at start and end, "
        "intermediate curve points on the first 20 of them.",
        "",
        "Objective (column): pg = that PPO/GRPO policy gradient on the chain's log-prob; flow_rwr = advantage-weighted "
        "flow matching (`training.rl.losses.flow_rwr`): the SFT flow-matching loss on the action chunks the rollouts "
        "executed, each weighted by exp(A/beta), or kept only where the group advantage A > 0, or only where its "
        "episode's return > 0 (success reward: the successful episodes, ReST-style); no likelihood, so x_0's "
        "randomness is credited too; \"+ demos x c\": each optimizer step also fits the SFT loss on one pack of the "
        "demos, times c. Paired: the same goals at start and end, solved by both / "
        "lost / gained, exact McNemar p.",
        "",
        "| task | act mode | start checkpoint | objective / sigma / lr / epochs / reward / trajectories per version "
        "| start (SFT, same act mode) | after RL | paired (both / lost / gained, p) | env steps | "
        "RL wall | lineage: demos lake version / packed table / SFT checkpoint / RL lake versions / eval versions (start, end) |",
        "|---|---|---|---|---|---|---|---:|---:|---|",
    ]
    for r in rl:
        s, e, lin = r["start"], r["end"], r["sft_lineage"] or {}
        lines.append(
            f"| {r['task']} | {_act_mode(r)} | `{r['task']}/{Path(r['init']).parent.name}/{Path(r['init']).name}` "
            f"(step {r['init_step']}) "
            f"| {_objective(r)} / {r['sigma']} / "
            f"{r['lr']} / {r['epochs']} / {r.get('reward', 'success')} / {_per_version(r)}"
            f"{f', RL seed {seed}' if (seed := r.get('rl_seed', 1)) != 1 else ''} "
            f"| {pct(s)} | **{pct(e)}**{_chosen(r)} "
            f"| {_paired(s, e)} | {r['env_steps']} | {r['rl_seconds'] / 60:.1f} min "
            f"| v{r['demo_version']} / `{lin.get('packed_table')}` / `{Path(r['init']).name}` (trained on "
            f"v{lin.get('lake_version')}) / "
            f"{', '.join(_v(v) for v in r['lake_versions'])} / {_v(s['eval_version'])}, {_v(e['eval_version'])} |")
    lines += old.get("rows", [])
    for r in rl:  # after the table: a line between rows would end it
        lines += ["", f"RL curve ({_mode(r)}; env steps: successes / episodes): "
                  + ", ".join(f"{p['env_steps']}: {p['k']}/{p['n']}" for p in r["curve"])]
    for r in rl:
        if h := trainer[id(r)]:
            lines += ["", f"Trainer per version ({_mode(r)}): " + _trainer_line(h)]
    lines += [f"\nNote ({_mode(r)}): {r['note']}" for r in rl if r.get("note")]
    lines += old.get("text", [])
    lines += ["", "![closed_loop_rl_vla.png](closed_loop_rl_vla.png)" + (
        " (the plot holds the runs whose result files are present; the earlier rows' curves are in the text)"
        if old.get("rows") else "")]
    return "\n".join(lines)


def best_on_validation(curve: list[dict]) -> int:
    """The index of the curve point (start included) with the most validation successes, the earliest on ties
    (fewer RL updates for the same validation success)."""
    return max(range(len(curve)), key=lambda i: (curve[i]["val"]["k"], -i))


def _chosen(r: dict) -> str:
    """The after-RL cell's note when the run's checkpoint was chosen on validation goals (``--rl-select val``)."""
    sel = r.get("selection")
    if not sel:
        return ""
    val = ", ".join(f"v{v}: {k}" for v, k in zip(sel["versions"], sel["val"]))
    return (f" (version {sel['chosen_version']} of {r['versions']}, chosen on {sel['episodes']} validation goals: "
            f"{val})")


def trainer_history(root: Path, r: dict) -> list[dict]:
    """The learner's rows per published version over a run's segments (``segment_<k>.json`` beside its result),
    with env steps = consumed rows x the act mode's k, cumulative over segments; [] when the files are gone."""
    out, base = [], 0
    run = root / r["task"] / r.get("tag", "")
    for seg in range(1, len(list(run.glob("segment_*.json"))) + 1):  # segment_1.json, segment_2.json, ...
        h = json.loads((run / f"segment_{seg}.json").read_text()).get("history") or []
        out += [{**x, "env_steps": base + x["consumed_steps"] * r.get("exec_steps", 1), "segment": seg} for x in h]
        base = out[-1]["env_steps"] if out else base
    return out


def _trainer_line(h: list[dict]) -> str:
    """One text line of a run's learner rows: rollout success, KL moved, lr where adapted, stale drops."""
    parts = [("rollout success", "success_rate", "{:.2f}"), ("update KL (nats, after the first step)", "update_kl",
             "{:.3f}"), ("version KL", "version_kl", "{:.3f}"), ("lr", "lr", "{:.2g}")]
    text = "; ".join(f"{name} " + ", ".join(fmt.format(x[k]) for x in h) for name, k, fmt in parts if k in h[0])
    last = {x.get("segment", 1): x.get("dropped_stale", 0) for x in h}  # each segment's trainer counts its own
    return text + f"; trajectories dropped as too stale: {sum(last.values())}"


def _objective(r: dict) -> str:
    loss = r.get("loss", "pg")
    if loss != "flow_rwr":
        return loss + (f" (KL <= {r['target_kl']:g} per version, adaptive lr)" if r.get("target_kl") else "")
    w = r["rwr_weight"]
    demos = f" + demos x {r['demo_coef']}" if r.get("demo_coef") else ""
    if w == "return" and r.get("rwr_min_return", 0.0) >= CONTROL_MIN_RETURN:  # the control keeps no RL row
        return f"control: demos x {r.get('demo_coef')} only (flow_rwr keeps no RL row: return > {r['rwr_min_return']:g})"
    return "flow_rwr (" + {"exp": f"exp(A/{r['rwr_beta']})", "positive": "A > 0",
                         "return": f"return > {r.get('rwr_min_return', 0.0):g}"}[w] + ")" + demos


def _per_version(r: dict) -> str:
    """Trajectories per version, and the GRPO group size where it is not the default 4."""
    g = r.get("group_size")
    return f"{r.get('batch_trajectories', 16)}" + (f" ({g} per goal)" if g and g != 4 else "")


def _paired(s: dict, e: dict) -> str:
    p = paired(s.get("successes"), e.get("successes"))
    return "—" if p is None else f"{p['both']} / {p['lost']} / {p['gained']}, p = {p['p']:.2g}"


def _act_mode(r: dict) -> str:
    k = r.get("exec_steps", 1)
    return ("re-plan every step" if k == 1 else f"exec {k} of {HORIZON}") + (", x_0 = 0" if r.get("x0_zero") else "")


def _mode(r: dict) -> str:
    """A run's name in curves and notes: task, act mode, reward, lr, trajectories per version."""
    loss = "" if r.get("loss", "pg") == "pg" else f"{_objective(r)}, "
    sigma = f", sigma {r['sigma']}" if r.get("sigma", 0.1) != 0.1 else ""
    sigma += f", KL <= {r['target_kl']:g}/version" if r.get("target_kl") else ""
    base = "rl_vla" if r.get("exec_steps", 1) == 1 else f"rl_vla_exec{r['exec_steps']}"
    name = r.get("tag", base)[len(base) + 1:] if r.get("tag", base).startswith(base + "_") else ""
    return (f"{r['task']}, {_act_mode(r)}, {loss}{r.get('reward', 'success')}, lr {r['lr']}{sigma}, "
            f"{_per_version(r)}/version" + (f", run {name}" if name else ""))  # two runs of one setting differ


def describe_task(env_id: str) -> str:
    from training.rl.envs import get_family

    return get_family(env_id).default_task


def report(root: Path, command: str, load: str) -> str:
    """The RESULTS.md section from every result under ``root``."""
    results = [json.loads(p.read_text()) for n in METAWORLD_TASKS if (p := root / n / "result.json").exists()]
    rl = [json.loads(p.read_text()) for n in METAWORLD_TASKS if (p := root / n / "rl_result.json").exists()]
    plots = _plots(results, rl, HERE)
    earlier_runs = [json.loads(p.read_text()) for n in METAWORLD_TASKS
                    for p in sorted((root / n / "earlier").glob("*.json"))]
    commands = list(dict.fromkeys(r.get("command") or command for r in [*results, *earlier_runs, *rl]))
    lines = [
        "Commands (each task's result is saved on its own; the section is rebuilt from all of them): "
        + "; ".join(f"`{c}`" for c in commands or [command]),
        f"Machine: {machine()}; {load} (shared with 5 other engineers' jobs: wall times are inflated, not timings)",
        "",
        f"Protocol: Meta-World's scripted experts with Gaussian action noise (std {results[0]['noise'] if results else '?'}) "
        f"write the demos (successful episodes kept; env seeds from seed {DEMO_SEED}); evaluation on held-out goals "
        f"(env seeds from seed {EVAL_SEED}, disjoint), success = `info['success']` before the time limit; 95% "
        "Wilson intervals. Where a row says so, the SFT checkpoint was chosen on validation goals (env seeds from seed "
        f"{VAL_SEED}, disjoint from both) and only that checkpoint met the held-out goals (early stopping). Every "
        "evaluation is itself a lake version (episodes + `evals` row).",
        f"Policy: the reference VLA (`training.vla`, flow matching, width {MODEL['width']}, depth {MODEL['depth']}, "
        f"state also fed to the action expert: `state_in_suffix`), inputs: {INPUTS}; {HORIZON}-step action chunks, "
        f"{MODEL['exec_steps']} executed before re-planning; AdamW lr 1e-3, cosine; 1 pack (2048 tokens, ~80 samples) "
        "per step; one thread.",
        "",
        "| task | inputs | demos (frames) | SFT steps (wall) | untrained | SFT | expert | lineage: demos lake version / "
        "pack / checkpoint / eval versions (untrained, SFT, expert) |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for r in [*results, *earlier_runs]:
        rows = r["rows"]
        tag = f" ({r.get('label', 'earlier run')})" if r in earlier_runs else ""
        if r.get("model", MODEL) != MODEL:
            tag += f" (width {r['model']['width']}, depth {r['model']['depth']})"
        if r.get("sft_seed"):
            tag += f" (SFT seed {r['sft_seed']})"
        sel = r.get("selection")
        ckpt = (f"`{r['task']}/sft/" + (Path(r['checkpoint']['path']).name if sel else "last.pt") + "`"
                + (f" (step {sel['step']}, chosen on {sel['episodes']} validation goals)" if sel else " (last)"))
        lines.append(
            f"| {r['task']}{tag} | state + text | {r['kept']} ({r['frames']}) | {r['sft_steps']} ({r['sft_seconds'] / 60:.1f} min) "
            f"| {pct(rows['untrained'])} | **{pct(rows['sft'])}** | {pct(rows['expert'])} | v{r['lake_version']} / "
            f"`{r['pack']['table']}` (v{r['pack']['version']}) / {ckpt} (trained on "
            f"v{r['checkpoint']['lake_version']}) / {_v(rows['untrained']['eval_version'])}, "
            f"{_v(rows['sft']['eval_version'])}, {_v(rows['expert']['eval_version'])} |")
    lines += [f"\n{p.read_text().strip()}" for n in METAWORLD_TASKS if (p := root / n / "earlier" / "NOTE.md").exists()]
    if results:
        def goals(r):
            if "selection" in r:
                return (f"validation goals (env seed {r['selection']['seed']}), {r['selection']['episodes']} episodes "
                        f"each; held-out goals only on the chosen step {r['selection']['step']}")
            return (f"held-out goals, intermediate points over {r['curve'][1]['n'] if len(r['curve']) > 2 else '?'} "
                    f"episodes, ends over {r['episodes']}; last checkpoint reported")

        lines += ["", "Learning curve (success vs SFT steps): " + "; ".join(
            f"{r['task']} ({goals(r)}): " + ", ".join(f"{p['step']}: {p['rate']:.0%}" for p in r["curve"])
            for r in results)]
    for r in rl:
        s, e = r["start"], r["end"]
        lines += ["", f"**RL from a supervised checkpoint ({r['task']})**: this row fine-tunes the RL package's "
                  "Gaussian actor-critic (2x64 MLP on the same state; RL of the VLA itself, through exact log-probs of "
                  f"its noisy denoising chain, is the section \"{VLA_SECTION}\"), behaviour-cloned "
                  f"(`training.rl.bc`) on {r['bc_demos']} of the task's demo episodes from the same lake "
                  f"(v{r['bc']['lake_version']}), then `training.rl` in aa mode (2 env workers x 4 envs, 16 trajectories "
                  f"per version, lr {r['lr']}, reward: " + ("success (1 on the success step), GRPO over 4 rollouts per "
                  "goal" if r.get("reward") == "success" else "Meta-World's shaped reward x0.01 to the time limit, GAE")
                  + f"), {r['versions']} published versions in {len(r['lake_versions'])} segments "
                  f"(each resumes from the last checkpoint), time limit {r['max_steps']} steps; RL seeds its own goals "
                  "(run seed), evaluation as above.",
                  "",
                  "| task | start (BC) | after RL | env steps | RL wall | lake versions holding the RL trajectories | "
                  "eval versions (start, end) |",
                  "|---|---|---|---:|---:|---|---|",
                  f"| {r['task']} | {pct(s)} | **{pct(e)}** | {r['env_steps']} | {r['rl_seconds'] / 60:.1f} min | "
                  f"{', '.join(_v(v) for v in r['lake_versions'])} | {_v(s['eval_version'])}, {_v(e['eval_version'])} |",
                  "",
                  "RL curve (env steps: success): " + ", ".join(f"{p['env_steps']}: {p['rate']:.0%}" for p in r["curve"])]
    lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines)


def rebuilds_sft_section(args, root: Path) -> bool:
    """Whether this invocation rebuilds the SFT / actor-critic section: only from a workdir holding its results (a
    LIBERO-only run leaves it alone), and not on a VLA-RL-only run (whose workdir may lack the other tasks' results:
    rebuilding would drop their rows)."""
    mw = any((root / n / f).exists() for n in METAWORLD_TASKS for f in ("result.json", "rl_result.json"))
    return mw and (args.report_only or bool(args.tasks) or (args.rl_task != "none" and args.rl_policy == "ac"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--rl-task", default="reach-v3", choices=[*TASKS, "none"])
    ap.add_argument("--demos", type=int, default=None, help="override every task's demo count")
    ap.add_argument("--sft-steps", type=int, default=None, help="override every task's SFT steps")
    ap.add_argument("--noise", type=float, default=0.1, help="expert action noise std (actions in [-1, 1])")
    ap.add_argument("--episodes", type=int, default=50, help="evaluation episodes per table entry")
    ap.add_argument("--curve-episodes", type=int, default=20, help="per intermediate RL curve point")
    ap.add_argument("--val-episodes", type=int, default=50,
                    help=f"validation goals (env seed {VAL_SEED}) per kept SFT checkpoint; the best one is evaluated")
    ap.add_argument("--ckpt-points", type=int, default=None,
                    help="SFT checkpoints kept and validated (the curve; default: the task's, else 4)")
    ap.add_argument("--sft-seed", type=int, default=0, help="SFT initialization and data order seed")
    ap.add_argument("--width", type=int, default=None, help="override the VLA width")
    ap.add_argument("--depth", type=int, default=None, help="override the VLA depth")
    ap.add_argument("--rl-demos", type=int, default=3, help="demo episodes the RL actor is behaviour-cloned on")
    ap.add_argument("--bc-steps", type=int, default=1500)
    ap.add_argument("--rl-segments", type=int, default=2)
    ap.add_argument("--rl-versions", type=int, default=8, help="published versions per RL segment")
    ap.add_argument("--rl-lr", type=float, default=None,
                    help="default 5e-4 for the actor-critic (1e-3 collapsed after ~25k env steps), 3e-4 for the VLA")
    ap.add_argument("--rl-policy", default="ac", choices=["ac", "vla"],
                    help="ac: behaviour-cloned Gaussian actor-critic; vla: the SFT'd VLA itself (training.rl.flow_policy)")
    ap.add_argument("--rl-init", default="chosen",
                    help="vla: the SFT checkpoint RL starts from: 'chosen' (validation-chosen) or a kept step number")
    ap.add_argument("--rl-sft-steps", type=int, default=None,
                    help="vla: start from a short SFT run of this many steps (same lake, pack, recipe; cosine over "
                         "them; kept every quarter, in <task>/sft_<N>/) instead of <task>/sft/")
    ap.add_argument("--rl-exec-steps", type=int, default=1,
                    help="vla: actions of each chunk executed per plan in RL and in its evaluations (1: re-plan every "
                         "env step; SFT evaluation executes 4)")
    ap.add_argument("--rl-batch", type=int, default=16,
                    help="vla: trajectories per published version (groups of 4 rollouts of one goal)")
    ap.add_argument("--rl-group", type=int, default=None,
                    help="vla, GRPO rewards: rollouts per goal (a group; default the reward's 4): more rollouts per "
                         "goal leave fewer groups all-success or all-fail (no signal)")
    ap.add_argument("--rl-seed", type=int, default=1,
                    help="RL run seed of segment 1 (segment k: + k - 1): its env workers' goals and noise; another "
                         "value replicates a run on other goals")
    ap.add_argument("--rl-x0-zero", action="store_true",
                    help="vla: the chain starts at x_0 = 0 in RL and its evaluations (all randomness is step noise)")
    ap.add_argument("--rl-name", default=None,
                    help="vla: a name for this run's folder and result (<task>/rl_vla[_exec<k>]_<name>): a second "
                         "configuration of one act mode keeps the first's row")
    ap.add_argument("--rl-sigma", type=float, default=0.1, help="vla: noise std per denoising step (normalized units)")
    ap.add_argument("--rl-epochs", type=int, default=2, help="vla: optimizer steps per global batch")
    ap.add_argument("--rl-select", default="last", choices=["last", "val"],
                    help="vla: the run's result: its last checkpoint, or (val) the segment end (start included) "
                         "best on --val-episodes validation goals (env seed VAL_SEED), as SFT chooses its step")
    ap.add_argument("--rl-target-kl", type=float, default=0.0,
                    help="vla, pg: a KL trust region per version (algo.target_kl, nats on the batch): steps halved "
                         "back into it, lr adapted between versions from --rl-lr (0: a fixed lr)")
    ap.add_argument("--rl-reward", default="success", choices=["success", "dense", "dense-grpo"])
    ap.add_argument("--rl-loss", default="pg", choices=["pg", "flow_rwr"],
                    help="vla: the trainer's objective (algo.loss): pg (PPO/GRPO on the chain's log-prob) or flow_rwr "
                         "(advantage-weighted flow matching on the executed chunks, no likelihood)")
    ap.add_argument("--rl-rwr-weight", default="return", choices=["exp", "positive", "return"],
                    help="vla, flow_rwr: a chunk's weight: exp(A / beta) capped; 1 where the group advantage > 0; or "
                         "1 where its episode's return > 0 (the success reward: successful episodes, ReST-style)")
    ap.add_argument("--rl-rwr-beta", type=float, default=1.0, help="vla, flow_rwr with exp weights: the temperature")
    ap.add_argument("--rl-rwr-min-return", type=float, default=0.0,
                    help="vla, flow_rwr with return weights: episodes with a larger return are kept (a value above "
                         "every return keeps none: the demos-only control of --rl-demo-coef)")
    ap.add_argument("--rl-demo-coef", type=float, default=0.0,
                    help="vla: > 0 adds the SFT loss on one pack of the task's demos (same lake, pack and version as "
                         "the SFT run) to every RL optimizer step, times this")
    ap.add_argument("--workdir", default="closed_loop_work")
    ap.add_argument("--report-only", action="store_true", help="rebuild RESULTS.md / plots from the results present")
    ap.add_argument("--record", action="store_true", help=f'replace the "{SECTION}" section of RESULTS.md')
    args = ap.parse_args(argv)

    root = Path(args.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    command = "nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/closed_loop.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    load0 = "/".join(f"{x:.1f}" for x in os.getloadavg())
    args.command = command

    def save_report():
        load = f"load average at start / now: {load0} / {'/'.join(f'{x:.1f}' for x in os.getloadavg())}"
        mw = rebuilds_sft_section(args, root)
        for section, body in ((SECTION, report(root, command, load) if mw else None),
                              (LIBERO_SECTION, libero_report(root, command, load)),
                              (VLA_SECTION, vla_report(root, command, load))):
            if body is None:
                continue
            print(body, flush=True)
            if args.record:
                record(section, body)
                print(f"recorded in {RESULTS}: {section}", flush=True)

    if args.report_only:
        save_report()
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from lake._ray import ensure_ray

    for attempt in range(3):  # Ray waits 30 s for its raylet: too short on a busy 2-core machine
        try:
            ensure_ray()
            break
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            import ray

            ray.shutdown()
            print(f"Ray start-up failed ({e}); retrying", flush=True)
    from training.sims import available

    for name in args.tasks:
        if (root / name / "result.json").exists():
            print(f"[{name}] done before: {root / name / 'result.json'}", flush=True)
        elif name not in METAWORLD_TASKS and not available("libero"):
            print(f"[{name}] skipped: LIBERO is not installed (the sims extra: make sims)", flush=True)
            continue
        else:
            run_task(name, args, root)
        save_report()
    if args.rl_task != "none":
        done = root / args.rl_task / (f"{_vla_tag(args)}_result.json" if args.rl_policy == "vla" else "rl_result.json")
        if done.exists():
            print(f"[{args.rl_task}] RL done before: {done}", flush=True)
        else:
            (run_rl_vla if args.rl_policy == "vla" else run_rl)(args.rl_task, args, root)
        save_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
