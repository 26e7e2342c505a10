"""`make demo`: the main job end to end on the embedded default (a lake in ./lake_demo, Ray in-process).

1. Write genuine LeRobot datasets from PushT simulation (v3.0 with h264 + AV1 cameras; v2.1).
2. Ingest a first recording session, then the longer session (only its new episodes land), then the v2.1 set.
3. Show the log, a diff, the episodes, stats, and a contact sheet decoded from the lake (lake_demo/episode.png).
4. Pack, decode the videos for the LeRobot-style dataset.
5. The closed loop on a task the policy learns (Meta-World reach, a second lake ``<lake>_reach``): scripted
   expert demos -> ingest -> pack -> train the reference VLA on ``lake.stream`` -> evaluate it and the untrained
   VLA on held-out goals, each evaluation recorded as a lake version, printed with its lineage.
Running it again is a no-op for the lakes (ingestion is idempotent) and resumes training.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console

import lake
from lake.cli import main as cli

console = Console()


def _source(root: Path, name: str, **kw) -> Path:
    path = root / name
    if not (path / "meta" / "info.json").exists():
        console.print(f"[bold]writing[/] {path} from PushT simulation ({kw['episodes']} episodes, {kw['version']})")
        lake.write_pusht_dataset(path, **kw)
    return path


def contact_sheet(lk: lake.Lake, episode_id: str, out: Path, columns: int = 8) -> Path:
    """First frames of every camera of one episode, decoded from the lake, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cams = lk.episodes(filter=f"episode_id = '{episode_id}'")["cameras"][0].as_py()
    fig, axes = plt.subplots(len(cams), columns, figsize=(columns * 1.4, len(cams) * 1.6))
    for r, cam in enumerate(cams):
        frames = lk.video(episode_id, cam)
        for c, i in enumerate(np.linspace(0, len(frames) - 1, columns).astype(int)):
            ax = axes[r, c]
            ax.imshow(frames[i])
            ax.set_axis_off()
            ax.set_title(f"{cam.rsplit('.', 1)[-1]} t={i}", fontsize=7)
    fig.suptitle(f"{episode_id} (lake version {lk.version})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake", default="lake_demo")
    p.add_argument("--data", default="demo_data", help="where the sample LeRobot datasets are written")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--reach-demos", type=int, default=30, help="Meta-World reach expert demos")
    p.add_argument("--steps", type=int, default=600, help="SFT steps (resumes if the demo ran before)")
    p.add_argument("--eval-episodes", type=int, default=20, help="per policy, on held-out goals")
    p.add_argument("--eval-steps", type=int, default=150, help="simulator steps per evaluation episode")
    args = p.parse_args(argv)
    data = Path(args.data)
    first = _source(data, "pusht_session1", episodes=args.episodes // 2, version="v3.0", seed=0)
    full = _source(data, "pusht_session2", episodes=args.episodes, version="v3.0", seed=0)  # ⊇ session 1
    older = _source(data, "pusht_v21", episodes=args.episodes // 3, version="v2.1", seed=1)

    lk = lake.open(args.lake)
    start = lk.version
    for src, msg in ((first, "session 1"), (full, "session 2 (superset of 1)"), (older, "an older v2.1 dataset")):
        console.rule(f"ingest {src} — {msg}")
        rep = lk.ingest(src, message=msg)
        console.print(f"→ version {rep.version}: +{rep.episodes_added} episodes, +{rep.frames_added} frames, "
                      f"{rep.episodes_skipped} already present, {len(rep.quarantined)} quarantined, {rep.seconds:.1f} s")
    if not any(e.tags for e in lk.log()):
        lk.tag("demo")

    console.rule("lake log")
    cli(["log", "--lake", lk.uri])
    console.rule(f"diff {start} → {lk.version}")
    os.environ.setdefault("COLUMNS", "120")
    cli(["diff", str(max(start, 1)), str(lk.version), "--lake", lk.uri])
    console.rule("episodes (val split, longer than 40 frames)")
    cli(["episodes", "--lake", lk.uri, "--split", "val", "--filter", "length > 40", "--limit", "10"])
    console.rule("stats")
    cli(["stats", "--lake", lk.uri])
    eid = lk.episodes(split="train")["episode_id"][0].as_py()
    sheet = contact_sheet(lk, eid, Path(args.lake) / "episode.png")
    console.print(f"\ncontact sheet of {eid} decoded from the lake: [bold]{sheet}[/]")

    console.rule("pack: decode, tokenize, bin-pack (offline, once)")
    from packers import Recipe

    # top camera only: the simulator renders it exactly as the recordings have it, so evaluation sees the same
    recipe = Recipe(cameras=("observation.images.top",), image_size=(64, 64), patch_size=16, action_horizon=16,
                    token_budget=2048, name="demo")
    rep = lk.pack(recipe)
    if rep.version is None:
        console.print(f"packed table {rep.table} is already up to date with lake version {lk.version}")
    else:
        console.print(f"→ version {rep.version}: {rep.packs} packs of ≤{recipe.token_budget} tokens hold "
                      f"{rep.samples} samples (one per frame), fill {rep.fill:.1%} (padding each sample to the "
                      f"longest would fill {_padded_fill(lk, rep):.1%}); table {rep.table}")

    console.rule("LeRobot-style map dataset: videos decoded once, then LeRobotDataset's batches")
    rep = lk.decode_videos()
    if rep.version is not None:
        console.print(f"→ version {rep.version}: {rep.frames} frames of {rep.videos} videos decoded into "
                      f"{rep.table} ({rep.bytes / 2**20:.0f} MiB), {rep.seconds:.1f} s")
    import torch

    from loaders import LeRobotStyleDataset

    ds = LeRobotStyleDataset(lk, split="train", delta_timestamps={"action": [i / 10 for i in range(16)]})
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
    console.print(f"→ {len(ds)} frames of {ds.num_episodes} episodes; a batch: " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim > 1))

    closed_loop(args)
    return 0


def closed_loop(args) -> None:
    """Meta-World reach: expert demos -> lake -> pack -> SFT -> evaluation of the trained and untrained VLA."""
    from training.evaluate import evaluate, wilson_interval
    from training.sft import SFTConfig, train
    from training.sims.demos import record_expert_demos
    from training.sims.metaworld_sft import INPUTS, METAWORLD_VLA, SFT_LR, metaworld_recipe

    env_id = "metaworld/reach-v3"
    uri, out = f"{args.lake.rstrip('/')}_reach", Path(args.data) / "metaworld_reach"
    console.rule(f"closed loop on {env_id}: expert demos → lake {uri} → pack → SFT → evaluation")
    if (out / "meta" / "info.json").exists():
        rep = lake.open(uri, create=True).ingest(str(out), split_ratios={"train": 1.0}, message=f"expert demos: {env_id}")
        console.print(f"demos in {out} (written before); ingest: +{rep.episodes_added} episodes")
    else:
        demo = record_expert_demos(uri, env_id, out=out, episodes=args.reach_demos, noise=0.1, seed=0, camera=False,
                                   batch_size=10)
        console.print(f"→ {demo.rolled_out} scripted-expert episodes (action noise 0.1), success "
                      f"{demo.success_rate:.0%}; {demo.kept} episodes / {demo.frames} frames as LeRobot v3.0 in "
                      f"{out}, ingested as version {demo.ingest.version}")
    lk = lake.open(uri)
    recipe = metaworld_recipe("demo-reach")
    rep = lk.pack(recipe)
    console.print(f"→ packed {recipe.name} ({INPUTS}; 8-step action chunks): "
                  + (f"version {rep.version}, {rep.samples} samples in {rep.packs} packs" if rep.version
                     else f"table {rep.table} already up to date"))
    console.rule(f"train the reference VLA on lake.stream('train') for {args.steps} steps")
    common = dict(lake=uri, recipe=recipe.hash, model=METAWORLD_VLA, lr=SFT_LR, warmup=50)
    runs = Path(args.lake) / "runs"
    t0 = time.perf_counter()
    sft = train(SFTConfig(out_dir=str(runs / "sft_reach"), steps=args.steps, log_every=max(1, args.steps // 10),
                          ckpt_every=args.steps, **common))
    losses, lin = sft["losses"], sft["lineage"]
    w = max(1, min(50, len(losses) // 10))
    console.print(f"→ {time.perf_counter() - t0:.0f} s; loss {sum(losses[:w]) / w:.3f} (first {w} steps) → "
                  f"{sum(losses[-w:]) / w:.3f} (last {w}); checkpoint {sft['checkpoint']} trained on lake version "
                  f"{lin['lake_version']}, recipe {lin['recipe_hash']}")
    untrained = train(SFTConfig(out_dir=str(runs / "sft_reach_0"), steps=0, **common), progress=False)["checkpoint"]
    console.rule(f"closed-loop evaluation on {args.eval_episodes} held-out goals (env seeds from 1000; demos: 0)")
    rates = {}
    for name, ckpt in (("untrained VLA (step 0)", untrained), (f"SFT VLA (step {args.steps})", sft["checkpoint"])):
        ev = evaluate(ckpt, env_id, args.eval_episodes, lake_uri=uri, seed=1000, record_video=False,
                      max_steps=args.eval_steps, batch_size=10)
        k = sum(r.success for r in ev.rows)
        lo, hi = wilson_interval(k, ev.episodes)
        rates[name] = ev.success_rate
        console.print(f"→ {name}: success {k}/{ev.episodes} = [bold]{ev.success_rate:.0%}[/] (95% CI {lo:.0%}–{hi:.0%}), "
                      f"mean length {ev.mean_length:.0f}; eval recorded as lake version {ev.lake_version} "
                      f"(checkpoint {ckpt}: lake version {lin['lake_version']}, recipe {lin['recipe_hash']})")
    trained, base = rates[f"SFT VLA (step {args.steps})"], rates["untrained VLA (step 0)"]
    verdict = "beats" if trained > base else "does NOT beat"
    console.print(f"[bold]the trained policy {verdict} the untrained one: {trained:.0%} vs {base:.0%}[/]")


def _padded_fill(lk: lake.Lake, rep) -> float:
    """What padding every sample to the longest one would fill, for comparison."""
    import numpy as np

    cu = lk.table(rep.table).to_table(columns=["cu_seqlens"])["cu_seqlens"].to_pylist()
    lengths = np.concatenate([np.diff(c) for c in cu])
    return float(lengths.sum() / (len(lengths) * lengths.max()))


if __name__ == "__main__":
    raise SystemExit(main())
