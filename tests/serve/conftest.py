"""A small demo lake with every page's data (two ingests and a tag, a pack, an evaluation, an RL run), and
``lake serve`` on it in a subprocess on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "ss-s0-feed01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rollout(rng, t: int, k: int):
    import lake

    return lake.NewEpisode(frames={"observation.state": rng.normal(size=(t, 2)).astype(np.float32),
                                   "action": rng.normal(size=(t, 2)).astype(np.float32)},
                           task="push the T into the target", policy_version=k, episode_return=float(k) + 0.5,
                           success=k >= 2, images={"observation.image": rng.integers(0, 255, (t, 32, 32, 3), np.uint8)},
                           attrs={"run_id": RUN_ID, "traj_id": k})


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory, pusht_v3, ray_session):
    """Versions: 1 ingest pusht_v3 (tag ``first``), 2 ingest a second source, 3 pack, 4 eval (+ evals row),
    5 an RL run's episodes."""
    import lake
    from packers import Recipe
    from training.evaluate import EVALS

    root = tmp_path_factory.mktemp("serve")
    other = lake.write_pusht_dataset(root / "pusht_more", episodes=4, version="v2.1", min_len=12, max_len=20, seed=7)
    lk = lake.open(root / "lake")
    assert lk.ingest(pusht_v3, progress=False).episodes_added == 6
    lk.tag("first")
    assert lk.ingest(other, progress=False, message="a second source").episodes_added == 4
    recipe = Recipe(cameras=("observation.images.top",), image_size=(32, 32), patch_size=16, action_horizon=4,
                    token_budget=512, name="serve-test")
    pack = lk.pack(recipe, progress=False)
    rng = np.random.default_rng(0)
    evals = [_rollout(rng, 10, 0) for _ in range(2)]
    ids = [lake.episode_id(e, 10) for e in evals]
    import pyarrow as pa
    from datetime import datetime, timezone

    row = pa.Table.from_pylist([{
        "eval_id": "e0e0e0e0e0e0", "checkpoint": str(root / "runs" / "sft" / "last.pt"), "checkpoint_step": 200,
        "lake_uri": lk.uri, "lake_version": 2, "lake_tag": None, "recipe_hash": pack.recipe_hash,
        "env_id": "gym_pusht/PushT-v0", "episodes": 2, "success_rate": 0.5, "mean_return": 0.5, "mean_length": 10.0,
        "seed": 0, "episode_ids": ids, "timestamp": datetime.now(timezone.utc)}], schema=EVALS)
    lk.append_episodes(evals, source="eval/gym_pusht/PushT-v0", fps=10, split="eval", message="eval last.pt",
                       extra={"evals": row})
    lk.append_episodes([_rollout(rng, 8, k) for k in range(4)], source="rl", fps=10, split="rl",
                       message=f"rl {RUN_ID}: 4 trajectories (policy versions 0..3)")
    return lk


def start_server(uri: str, port: int, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "lake.cli", "serve", "--lake", uri, "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # until it answers (imports take seconds on a busy machine)
        if proc.poll() is not None:
            raise RuntimeError(f"lake serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url + "/static/view.css", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("lake serve did not answer")


@pytest.fixture(scope="session")
def server(demo_lake):
    """``lake serve`` on the demo lake: the base URL."""
    port = free_port()
    proc = start_server(demo_lake.uri, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)
    proc.stdout.close()
