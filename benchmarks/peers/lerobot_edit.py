# .venv-peers/bin/python benchmarks/peers/lerobot_edit.py SOURCE WORKDIR --delete 3,13,... --task-episodes 0,4,... --new-task T
"""LeRobot 0.4's dataset tools as a peer of ``lake edit``: ``delete_episodes`` and ``modify_tasks``.

Run by ``benchmarks/edit.py`` in ``.venv-peers``. Each operation gets a fresh copy of SOURCE (copied before the
clock starts): ``delete_episodes(ds, indices, output_dir)`` writes a new dataset (re-encoding the video files that
held a deleted episode); ``modify_tasks(ds, episode_tasks=...)`` rewrites the task files in place. Bytes written:
every file of the output dataset (delete) / every file whose size or mtime changed (modify_tasks). Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            st = os.stat(os.path.join(d, f))
            out[os.path.relpath(os.path.join(d, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def written(before: dict, after: dict) -> tuple[int, int]:
    """(bytes, of which video bytes) of files new or changed between two snapshots."""
    total = video = 0
    for p, (size, mtime) in after.items():
        if before.get(p) != (size, mtime):
            total += size
            video += size if p.endswith(".mp4") else 0
    return total, video


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("work")
    ap.add_argument("--delete", required=True)
    ap.add_argument("--task-episodes", required=True)
    ap.add_argument("--new-task", required=True)
    a = ap.parse_args()
    from lerobot.datasets.dataset_tools import delete_episodes, modify_tasks
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = {}

    src = work / "del_src"
    shutil.copytree(a.source, src)
    ds = LeRobotDataset("local/pusht", root=src, video_backend="pyav")
    dst = work / "del_out"
    t0 = time.perf_counter()
    new = delete_episodes(ds, [int(i) for i in a.delete.split(",")], output_dir=dst, repo_id="local/pusht_del")
    out["delete_s"] = time.perf_counter() - t0
    out["delete_bytes"], out["delete_video_bytes"] = written({}, snapshot(dst))
    out["delete_episodes_left"] = new.meta.total_episodes

    src = work / "task_src"
    shutil.copytree(a.source, src)
    ds = LeRobotDataset("local/pusht", root=src, video_backend="pyav")
    before = snapshot(src)
    t0 = time.perf_counter()
    modify_tasks(ds, episode_tasks={int(i): a.new_task for i in a.task_episodes.split(",")})
    out["relabel_s"] = time.perf_counter() - t0
    out["relabel_bytes"], out["relabel_video_bytes"] = written(before, snapshot(src))
    import resource

    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
