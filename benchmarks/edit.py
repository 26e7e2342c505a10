# .venv/bin/python benchmarks/edit.py [--repeats 3] [--record]
"""Dataset surgery: ``lk.delete_episodes`` / ``lk.update_episodes`` vs LeRobot 0.4.4's ``delete_episodes`` /
``modify_tasks`` (``lerobot.datasets.dataset_tools``) on the same 200-episode PushT v3.0 dataset.

Issue 19's benchmark. The edits: delete 10% of the episodes (20: source episode indices 3, 13, 23, ...) and
relabel one task (every episode whose task is the dataset's first task gets a new task string).

- lake: the source ingested once into a lake of this benchmark's own (cached under ``benchmarks/_data/``), copied
  for each round (before the clock starts); timed: ``delete_episodes(ids=...)`` then ``update_episodes(
  "task = '...'", {"task": new})`` on the copy, each one lake version. Bytes written: every file new or changed in
  the lake folder (manifests, deletion vectors, the rewritten episodes rows, the log row); video bytes: those under
  ``videos.lance/data``.
- LeRobot: ``benchmarks/peers/lerobot_edit.py`` in ``.venv-peers`` (``make .venv-peers/.installed`` builds it:
  lerobot 0.4.4 with the torch it pins), one fresh copy of the source per operation; ``delete_episodes`` writes a
  new dataset (it re-encodes each video file that held a deleted episode), ``modify_tasks`` rewrites in place.

Every round runs in fresh processes, lake and LeRobot alternating; best and median wall seconds over
``--repeats`` rounds. Before timing, the lake's result is checked: the deleted episodes are gone from the new
version and still in the old one, the relabelled episodes carry the new task, and LeRobot's result keeps the
same number of episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import lake  # noqa: E402

DATA = HERE / "_data"
BASE = DATA / "edit-base-lake"
WORK = DATA / "edit-work"
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
PEER = HERE / "peers" / "lerobot_edit.py"
SECTION = "Dataset surgery (issue 19)"
NEW_TASK = "push the T-shaped block onto the target outline"
DELETE = list(range(3, 200, 10))  # 20 of 200 source episode indices


def source() -> Path:
    from lerobot_peers import ensure_source

    return ensure_source()


def ensure_base() -> Path:
    if (BASE / "_log.lance").exists():
        return BASE
    shutil.rmtree(BASE, ignore_errors=True)
    lk = lake.open(BASE)
    t = time.perf_counter()
    rep = lk.ingest(source(), progress=False)
    print(f"ingested {rep.episodes_added} episodes in {time.perf_counter() - t:.1f} s", flush=True)
    return BASE


def first_task() -> tuple[str, list[int]]:
    """The source's first task and the source episode indices that carry it."""
    lk = lake.open(BASE, create=False)
    eps = lk.episodes(columns=["source_episode_index", "task"]).to_pylist()
    task = sorted(eps, key=lambda r: r["source_episode_index"])[0]["task"]
    return task, sorted(r["source_episode_index"] for r in eps if r["task"] == task)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            st = os.stat(os.path.join(d, f))
            out[os.path.relpath(os.path.join(d, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def written(before: dict, after: dict) -> tuple[int, int]:
    total = video = 0
    for p, (size, mtime) in after.items():
        if before.get(p) != (size, mtime):
            total += size
            video += size if p.startswith("videos.lance/data") else 0
    return total, video


def lake_round() -> dict:
    """One round in this (fresh) process: copy the base lake, time the two edits, check them."""
    task, _ = first_task()
    work = WORK / "lake"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(BASE, work)
    import resource

    lk = lake.open(work, create=False)
    v0 = lk.version
    ids = lk.episodes(filter=f"source_episode_index IN ({', '.join(map(str, DELETE))})",
                      columns=["episode_id"])["episode_id"].to_pylist()
    s0 = snapshot(work)
    t0 = time.perf_counter()
    lk.delete_episodes(ids=ids, message="benchmark: delete 10%")
    t1 = time.perf_counter()
    s1 = snapshot(work)
    rep = lk.update_episodes(f"task = '{task}'", {"task": NEW_TASK}, message="benchmark: relabel one task")
    t2 = time.perf_counter()
    s2 = snapshot(work)
    # checks (outside the clock)
    assert len(ids) == 20 and lk.episodes().num_rows == 180, lk.episodes().num_rows
    assert set(ids) <= set(lk.checkout(v0).episodes()["episode_id"].to_pylist())
    assert not set(ids) & set(lk.episodes()["episode_id"].to_pylist())
    relabelled = lk.episodes(filter=f"task = '{NEW_TASK}'").num_rows
    assert relabelled == len(rep.episodes) and lk.episodes(filter=f"task = '{task.replace(chr(39), chr(39) * 2)}'").num_rows == 0
    d_bytes, d_video = written(s0, s1)
    r_bytes, r_video = written(s1, s2)
    shutil.rmtree(work, ignore_errors=True)
    return {"delete_s": t1 - t0, "relabel_s": t2 - t1, "delete_bytes": d_bytes, "delete_video_bytes": d_video,
            "relabel_bytes": r_bytes, "relabel_video_bytes": r_video, "relabelled": relabelled,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def peer_round(task_eps: list[int]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    p = subprocess.run([str(PEERS_PY), str(PEER), str(source()), str(WORK / "lerobot"),
                        "--delete", ",".join(map(str, DELETE)), "--task-episodes", ",".join(map(str, task_eps)),
                        "--new-task", NEW_TASK], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"LeRobot peer failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["delete_episodes_left"] == 180, out
    return out


def _mb(n: float) -> str:
    return f"{n / 2**20:,.2f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB"


def report(rounds_lake: list[dict], rounds_peer: list[dict], cmd: str, note: str = "") -> str:
    from _report import machine

    def best(rs, k):
        return min(r[k] for r in rs)

    def med(rs, k):
        return statistics.median(r[k] for r in rs)

    lines = [
        f"Command: `{cmd}` — {machine()}. The machine is shared with other engineers' jobs (2 cores, busy): wall "
        "times are noisy; the ratios and the bytes are the figures to trust." + (f" {note}" if note else ""),
        "",
        "200-episode PushT v3.0 (2 cameras), delete 20 episodes (10%) then relabel every episode of one task "
        f"({rounds_lake[0]['relabelled']} episodes). Lake: `lk.delete_episodes` / `lk.update_episodes`, each one "
        "lake version; LeRobot 0.4.4: `dataset_tools.delete_episodes` (new dataset) / `modify_tasks` (in place). "
        f"{len(rounds_lake)} rounds each, fresh processes.",
        "",
        "| edit | lake best / median s | LeRobot best / median s | speed-up (best) | lake bytes written | LeRobot bytes written | video bytes rewritten (lake / LeRobot) |",
        "|---|---|---|---|---|---|---|",
    ]
    if not rounds_peer:
        rounds_peer = [{k: float("nan") for k in rounds_lake[0]}]
    for op in ("delete", "relabel"):
        lb, lm = best(rounds_lake, f"{op}_s"), med(rounds_lake, f"{op}_s")
        pb, pm = best(rounds_peer, f"{op}_s"), med(rounds_peer, f"{op}_s")
        lines.append(f"| {op} | {lb:.3f} / {lm:.3f} | {pb:.2f} / {pm:.2f} | {pb / lb:,.0f}x | "
                     f"{_mb(med(rounds_lake, f'{op}_bytes'))} | {_mb(med(rounds_peer, f'{op}_bytes'))} | "
                     f"{_mb(med(rounds_lake, f'{op}_video_bytes'))} / {_mb(med(rounds_peer, f'{op}_video_bytes'))} |")
    tl = best(rounds_lake, "delete_s") + best(rounds_lake, "relabel_s")
    tp = best(rounds_peer, "delete_s") + best(rounds_peer, "relabel_s")
    lines += ["", f"Both edits: lake {tl:.3f} s vs LeRobot {tp:.2f} s = **{tp / tl:,.0f}x** (target >= 100x); "
              f"peak RSS lake {max(r['peak_rss_mb'] for r in rounds_lake):,.0f} MB, LeRobot "
              f"{max(r['peak_rss_mb'] for r in rounds_peer):,.0f} MB. The lake's delete writes deletion vectors and "
              "manifests (no data file, no video byte); its relabel writes the changed `episodes` rows, the tasks "
              "table, manifests and the log row. LeRobot's `delete_episodes` writes a whole new dataset and "
              "re-encodes every video file that held a deleted episode; its `modify_tasks` rewrites the task files "
              "in place (cheap, but the old labels are gone: no version to go back to), which is why the relabel "
              "ratio is small. The lake's old version stays readable (`checkout`), and `restore` undoes either edit."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--lake-round", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-peer", action="store_true", help="lake side only (no .venv-peers)")
    ap.add_argument("--rerender", action="store_true", help="re-render the last run's figures (edit.json)")
    a = ap.parse_args()
    if a.rerender:
        saved = json.loads((DATA / "edit.json").read_text())
        body = report(saved["lake"], saved["lerobot"], saved.get("cmd", "python benchmarks/edit.py --record"),
                      saved.get("note", ""))
        print(body)
        if a.record:
            from _report import record

            record(SECTION, body)
        return
    if a.lake_round:
        print(json.dumps(lake_round()))
        return
    source()
    ensure_base()
    _, task_eps = first_task()
    peer = not a.no_peer and PEERS_PY.exists()
    if not peer:
        print("no .venv-peers: LeRobot side skipped", flush=True)
    rl, rp = [], []
    for i in range(a.repeats):
        p = subprocess.run([sys.executable, __file__, "--lake-round"], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-3000:])
        rl.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"round {i}: lake {json.dumps(rl[-1])}", flush=True)
        if peer:
            rp.append(peer_round(task_eps))
            print(f"round {i}: LeRobot {json.dumps(rp[-1])}", flush=True)
    cmd = "python benchmarks/edit.py" + (f" --repeats {a.repeats}" if a.repeats != 3 else "") + " --record"
    body = report(rl, rp, cmd, f"5-minute load average at the end of the run: {os.getloadavg()[1]:.0f}.")
    print(body)
    note = f"5-minute load average at the end of the run: {os.getloadavg()[1]:.0f}."
    (DATA / "edit.json").write_text(json.dumps({"lake": rl, "lerobot": rp, "cmd": cmd, "note": note}))
    if a.record:
        from _report import record

        record(SECTION, body)
        print("recorded in benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
