# HF_HUB_OFFLINE=1 .venv-peers/bin/python benchmarks/peers/lerobot_loader.py --root DATASET [--batch-size 32] [--workers 0] [--batches 50] [--backend torchcodec]
"""LeRobot's own loader as a peer: ``LeRobotDataset`` + torch ``DataLoader`` over a local LeRobot dataset.

Runs in .venv-peers (``make bench-peers``: lerobot 0.4.4 with its own torch), driven by
``benchmarks/lerobot_peers.py``. One round per process: ``LeRobotDataset(repo_id, root=...,
delta_timestamps={"action": [i / fps for i in range(horizon)]}, video_backend=...)`` in a DataLoader
(``shuffle=True``, ``batch_size``, ``num_workers``; LeRobot's training script leaves the worker start method
at the default, fork), ``--warmup`` batches, then ``--batches`` timed (``_harness.measure``). Prints one JSON
line: the figures, the video backend used, versions.

``--dump OUT.npz --indices 0,17,...`` instead saves those items (images as float32 in [0, 1]) for the
driver to compare against the parquet and the lake.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local dataset: never reach the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _harness import measure  # noqa: E402


def open_dataset(root: str, horizon: int, backend: str | None):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    fps = LeRobotDatasetMetadata("local/pusht", root=root).fps
    return LeRobotDataset("local/pusht", root=root, delta_timestamps={"action": [i / fps for i in range(horizon)]},
                          video_backend=backend)


def dump(ds, indices: list[int], out: str) -> None:
    arrays: dict[str, np.ndarray] = {}
    items = [ds[i] for i in indices]
    for key, v in items[0].items():
        if isinstance(v, torch.Tensor):
            arrays[key] = np.stack([it[key].numpy() for it in items])
    arrays["task"] = np.array([it["task"] for it in items])
    np.savez(out, **arrays)
    meta = ds.meta
    stats = {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in meta.stats.items()}
    print(json.dumps({"len": len(ds), "num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "fps": ds.fps,
                      "video_keys": meta.video_keys, "camera_keys": meta.camera_keys, "backend": ds.video_backend,
                      "episode_lengths": [int(x) for x in meta.episodes["length"]],
                      "dataset_from_index": [int(x) for x in meta.episodes["dataset_from_index"]],
                      "dataset_to_index": [int(x) for x in meta.episodes["dataset_to_index"]],
                      "features": meta.features, "robot_type": meta.robot_type, "total_frames": meta.total_frames,
                      "total_episodes": meta.total_episodes, "stats": stats, "episodes_arg": ds.episodes}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--horizon", type=int, default=16)
    ap.add_argument("--backend", default=None, help="torchcodec | pyav (default: LeRobot's choice)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the main process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump")
    ap.add_argument("--indices", default="0")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    ds = open_dataset(args.root, args.horizon, args.backend)
    open_s = time.perf_counter() - t
    if args.dump:
        return dump(ds, [int(i) for i in args.indices.split(",")], args.dump)

    g = torch.Generator()
    g.manual_seed(args.seed)

    def loader():
        return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                           generator=g, drop_last=True,
                                           persistent_workers=False)

    res = measure(loader, lambda b: len(b["index"]), args.warmup, args.batches)
    import av
    import lerobot
    import torchvision

    res.update({"method": "LeRobotDataset", "backend": ds.video_backend, "open_s": open_s, "len": len(ds),
                "batch_size": args.batch_size, "workers": args.workers, "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(), "torchvision": torchvision.__version__, "av": av.__version__,
                "lerobot": getattr(lerobot, "__version__", "?"), "python": sys.version.split()[0]})
    try:
        import torchcodec

        res["torchcodec"] = torchcodec.__version__
        from torchcodec._core import get_ffmpeg_library_versions

        res["ffmpeg"] = get_ffmpeg_library_versions().get("ffmpeg_version", "?")
    except Exception as e:  # noqa: BLE001 - reported, not fatal (pyav backend)
        res["torchcodec"] = f"unavailable: {type(e).__name__}"
    print(json.dumps(res))


if __name__ == "__main__":
    main()
