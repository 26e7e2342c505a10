"""The lake's LeRobot-style stats against LeRobot 0.4.4's own functions, on the same data.

    PYTHONPATH=. .venv/bin/python benchmarks/lerobot_stats_check.py --lerobot /path/to/venv-with-lerobot/bin/python

1. (this python) A lake of two robots: a PushT dataset (LeRobot v3.0, 96x96 cameras) through ``lk.ingest`` and a
   second robot ("arm3": 3-d state/action, a 320x240 camera, episodes of 1 to 160 frames) through
   ``lk.append_episodes``. Per episode its frames (as stored: float32 stays float32) and its decoded frames (as
   PNG, which LeRobot's ``sample_images`` reads) are dumped with the lake's ``stats(by="episode",
   method="lerobot")``, ``stats(by="embodiment", method="lerobot")`` and ``meta.stats`` of a LeRobotStyleDataset.
   The arm3 episodes are also exported (``lk.export``, lerobot-v3.0).
2. (``--lerobot`` python, in a subprocess, no lake import) LeRobot's ``compute_episode_stats`` per episode and
   ``aggregate_stats`` per robot; ``LeRobotDataset(root=export).meta.stats``. Every value is compared with the
   lake's: the largest absolute difference per stat is printed, and the count of values that differ at all.
   Image ``std`` is compared with LeRobot's ``get_feature_stats`` on the same pixels as float64: LeRobot 0.4.4's
   own image std wraps uint8 squares (huggingface/lerobot#3682) and is reported beside it.

Prints a markdown block for benchmarks/RESULTS.md (``--record`` appends it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHECK = r"""
import json, sys
from pathlib import Path
import numpy as np
from lerobot.datasets.compute_stats import aggregate_stats, compute_episode_stats, get_feature_stats
from lerobot.datasets.compute_stats import auto_downsample_height_width, sample_indices
from lerobot.datasets.utils import load_image_as_numpy
import lerobot

root = Path(sys.argv[1])
lake = json.loads((root / "lake.json").read_text())
diffs, wrapped = {}, []

def note(what, key, ours, theirs):
    a, b = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    if a.shape != b.shape:
        raise SystemExit(f"{what} {key}: shape {a.shape} vs LeRobot's {b.shape}")
    d = diffs.setdefault(key, [0.0, 0, 0])
    d[0] = max(d[0], float(np.abs(a - b).max()) if len(a) else 0.0)
    d[1] += int((a != b).sum())
    d[2] += len(a)

per_robot = {}
for ep in lake["episodes"]:
    d = root / ep["episode_id"]
    arrays = dict(np.load(d / "frames.npz"))
    data, features = {}, {}
    for k, x in arrays.items():
        data[k], features[k] = x, {"dtype": str(x.dtype)}
    for cam, n in ep["cameras"].items():
        data[cam] = [str(d / cam / f"{i:05d}.png") for i in range(n)]
        features[cam] = {"dtype": "video"}
    theirs = compute_episode_stats(data, features)
    ours = {f: {k: np.asarray(v) for k, v in s.items()} for f, s in lake["per_episode"][ep["episode_id"]].items()}
    for f, s in theirs.items():
        image = features[f]["dtype"] == "video"
        if image:  # LeRobot's std on the same pixels as float64 (no uint8 wrap)
            imgs = np.stack([auto_downsample_height_width(load_image_as_numpy(data[f][i], dtype=np.uint8,
                             channel_first=True)) for i in sample_indices(len(data[f]))]).astype(np.float64)
            exact_std = get_feature_stats(imgs, axis=(0, 2, 3), keepdims=True)["std"][0] / 255.0
            wrapped.append(float(np.abs(s["std"]).max()))
            s = {**s, "std": exact_std}
        for k, v in s.items():
            note(f"{ep['episode_id']} {f}", ("image " if image else "") + k, ours[f][k], v)
    per_robot.setdefault(ep["robot"], []).append(
        {f: ({**s, "std": np.asarray(ours[f]["std"])} if features[f]["dtype"] == "video" else s)
         for f, s in theirs.items()})
for robot, eps in per_robot.items():
    agg = aggregate_stats(eps)
    for f, s in agg.items():
        for k, v in s.items():
            note(f"{robot} {f}", "aggregate " + k, lake["per_embodiment"][robot][f][k], v)
# LeRobot's own loader reading the export's stats.json
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/export", root=str(root / "export"), video_backend="pyav")
for f, s in ds.meta.stats.items():
    for k, v in s.items():
        note(f"export {f}", "export meta.stats " + k, lake["export"][f][k], v)
print(json.dumps({"lerobot": lerobot.__version__, "numpy": np.__version__, "diffs": diffs,
                  "lerobot_image_std_max": max(wrapped) if wrapped else None}))
"""


def build(root: Path) -> dict:
    """Part 1: the lake, its stats and the dumped episodes (see the module doc)."""
    import pyarrow as pa
    from PIL import Image

    import lake
    from loaders import LeRobotStyleDataset

    src = lake.write_pusht_dataset(root / "pusht", episodes=6, version="v3.0", min_len=20, max_len=120, seed=0)
    lk = lake.open(root / "lake")
    lk.ingest(src, split_ratios={"train": 1.0}, progress=False)
    rng = np.random.default_rng(7)
    eps = []
    for T in (1, 2, 37, 160, 99):
        t = np.linspace(0, 1, T, dtype=np.float32)[:, None]
        frames = np.clip(rng.normal(120, 40, (T, 240, 320, 3)) + 60 * np.sin(6 * t)[..., None, None], 0, 255)
        eps.append(lake.NewEpisode(
            frames={"observation.state": (rng.normal(size=(T, 3)) * [1, 10, 0.1]).astype(np.float32),
                    "action": np.cumsum(rng.normal(size=(T, 3)), 0).astype(np.float32)},
            images={"observation.images.front": frames.astype(np.uint8)}, task="reach"))
    lk.append_episodes(eps, source="arm3", fps=10, robot_type="arm3")
    lk = lake.open(lk.uri)
    out = {"episodes": [], "per_episode": {}, "per_embodiment": {}}
    per = lk.stats(by="episode", method="lerobot")
    for e in lk.episodes().to_pylist():
        eid, d = e["episode_id"], root / e["episode_id"]
        f = lk.frames(eid)
        arrays = {}
        for name in f.column_names:
            col = f[name].combine_chunks()
            if name == "episode_id" or pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                continue
            if pa.types.is_fixed_size_list(col.type):
                arrays[name] = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
            else:
                arrays[name] = col.to_numpy(zero_copy_only=False)
        d.mkdir(parents=True)
        np.savez(d / "frames.npz", **arrays)
        cams = {}
        for cam in e["cameras"]:
            video = lk.video(eid, cam)
            (d / cam).mkdir()
            for i, img in enumerate(video):
                Image.fromarray(img).save(d / cam / f"{i:05d}.png")
            cams[cam] = len(video)
        out["episodes"].append({"episode_id": eid, "robot": e["robot_type"], "cameras": cams})
        out["per_episode"][eid] = {k: {s: np.asarray(v).tolist() for s, v in st.items()}
                                   for k, st in per[eid].items() if k in arrays or k in cams}
    for robot, st in lk.stats(by="embodiment", method="lerobot").items():
        out["per_embodiment"][robot] = {k: {s: np.asarray(v).tolist() for s, v in x.items()} for k, x in st.items()}
    ids = lk.episodes(filter="source = 'arm3'")["episode_id"].to_pylist()
    meta = LeRobotStyleDataset(lk, episodes=ids).meta.stats
    lk.export(root / "export", filter="source = 'arm3'")
    out["export"] = {k: {s: np.asarray(v).tolist() for s, v in x.items()} for k, x in meta.items()}
    out["frames"] = int(sum(len(np.load(root / e["episode_id"] / "frames.npz")["frame_index"])
                            for e in out["episodes"]))
    (root / "lake.json").write_text(json.dumps(out))
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lerobot", required=True, help="a python with lerobot 0.4 installed")
    p.add_argument("--record", action="store_true", help="append the block to benchmarks/RESULTS.md")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrstats-") as tmp:
        root = Path(tmp)
        info = build(root)
        res = subprocess.run([a.lerobot, "-c", CHECK, str(root)], capture_output=True, text=True)
        if res.returncode:
            print(res.stdout, res.stderr, file=sys.stderr)
            return 1
        got = json.loads(res.stdout.strip().splitlines()[-1])
    rows = ["| stat | values compared | differing | largest abs. difference |", "|---|---:|---:|---:|"]
    for k, (mx, n_diff, n) in sorted(got["diffs"].items()):
        rows.append(f"| {k} | {n} | {n_diff} | {mx:.3g} |")
    exact = all(v[1] == 0 for v in got["diffs"].values())
    block = "\n".join([
        "## LeRobot-style stats: the lake against LeRobot's own functions",
        "",
        f"`python benchmarks/lerobot_stats_check.py --lerobot <python with lerobot>`; lerobot {got['lerobot']} "
        f"(numpy {got['numpy']} there, {np.__version__} here). Two robots: PushT v3.0 through `lk.ingest` (96x96 "
        "cameras) and a 3-d arm through `lk.append_episodes` (320x240 camera: downsampled; episodes of 1-160 frames: "
        f"all frames below 100, then LeRobot's sample), {len(info['episodes'])} episodes, {info['frames']} frames. "
        "Per episode: the lake's `stats(by='episode', method='lerobot')` vs LeRobot's `compute_episode_stats` on the "
        "lake's frames and its decoded video as PNG; per robot: `stats(by='embodiment', method='lerobot')` vs "
        "`aggregate_stats`; LeRobot's `LeRobotDataset(root=export).meta.stats` vs the lake's `meta.stats`.",
        "",
        *rows,
        "",
        ("Every value is equal, bit for bit (tolerance 0)" if exact else "Stated tolerance: see the largest differences")
        + f", except as stated: image `std` is compared with LeRobot's `get_feature_stats` on the same pixels as "
        f"float64, since LeRobot 0.4.4 squares uint8 pixels in uint8 (huggingface/lerobot#3682); its own image std "
        f"here is {got['lerobot_image_std_max']:.3g} at most, over every channel of every episode. The per-robot "
        "aggregate uses the lake's image std on both sides for that reason.",
    ])
    print(block)
    if a.record:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write("\n\n" + block + "\n")
    return 0 if exact else 2


if __name__ == "__main__":
    raise SystemExit(main())
