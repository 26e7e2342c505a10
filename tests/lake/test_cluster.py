"""The same ingestion run against a multi-process Ray cluster (``ray start --head`` on this machine) gives the
same lake as the embedded run.

The head runs in its own session (``start_new_session``) with its own ``--temp-dir``; it is torn down by
killing exactly the processes of that session (or naming that temp dir). ``ray stop`` is never used: it
kills every Ray process on the machine, this test session's embedded Ray included.
The ingestion runs in a subprocess (this process already has an embedded Ray): ``python -m lake.cli ingest
SRC --lake L --ray-address 127.0.0.1:PORT``.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import lake

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:lance is not fork-safe")]  # Ray spawns via fork+exec

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_pids(sid: int, temp_dir: str) -> list[int]:
    """Processes of the head: in the session ``ray start`` opened, or naming its temp dir."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        state, session = fields[0], int(fields[3])
        if state != "Z" and (session == sid or temp_dir in cmdline):
            out.append(int(entry))
    return out


def _kill_head(sid: int, temp_dir: str, timeout: float = 30.0) -> list[int]:
    """SIGKILL every process of the head until none is left; returns the survivors (should be [])."""
    deadline = time.monotonic() + timeout
    while (pids := _head_pids(sid, temp_dir)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return _head_pids(sid, temp_dir)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head node with 2 CPUs in its own processes; yields (address, env for clients, temp dir)."""
    temp_dir = tempfile.mkdtemp(prefix="rc_", dir="/tmp")  # short: unix socket paths are limited (~107 chars)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LAKE_RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    # Token auth on both sides, with a token of our own (not ~/.ray/auth_token).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), LANCE_LOG="error")
    port = _free_port()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=2",
           "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--include-dashboard=false",
           f"--object-store-memory={256 << 20}",
           f"--temp-dir={temp_dir}", f"--dashboard-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sid = proc.pid  # the new session's id is the leader's pid; every head process stays in it
    try:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"ray start failed:\n{out}"
        yield f"127.0.0.1:{port}", env, temp_dir
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        survivors = _kill_head(sid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"Ray head processes left behind: {survivors}"


@pytest.fixture(scope="module")
def cluster_lake(ray_head, pusht_v3, tmp_path_factory):
    address, env, temp_dir = ray_head
    uri = tmp_path_factory.mktemp("cluster") / "lake"
    cmd = [sys.executable, "-m", "lake.cli", "ingest", str(pusht_v3), "--lake", str(uri), "--ray-address", address, "-q"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-5000:]}"
    assert "version 1 (new); 6 episodes" in out, out
    return lake.open(uri, create=False)


def test_the_job_ran_on_the_cluster(ray_head, cluster_lake):
    _, _, temp_dir = ray_head
    logs = {os.path.basename(p) for p in glob.glob(os.path.join(temp_dir, "session_latest", "logs", "*"))}
    # The ingestion subprocess was the cluster's first driver (job 01000000) ...
    assert any(n.startswith("python-core-driver-01000000") for n in logs), sorted(logs)
    # ... and its tasks ran in the head's worker processes (worker-<id>-<job>-<pid>.out).
    assert any(n.startswith("worker-") and "-01000000-" in n for n in logs), sorted(logs)


def test_cluster_ingest_gives_the_same_lake_as_the_embedded_run(cluster_lake, ingested):
    from lake._schema import EPISODES

    a, b = cluster_lake, ingested.checkout(1)
    assert a.version == b.version == 1
    ea = a.episodes(columns=EPISODES.names).sort_by("episode_id")
    eb = b.episodes(columns=EPISODES.names).sort_by("episode_id")
    assert ea.num_rows == 6
    assert ea["episode_id"].to_pylist() == eb["episode_id"].to_pylist()
    assert ea["split"].to_pylist() == eb["split"].to_pylist()
    assert ea["length"].to_pylist() == eb["length"].to_pylist()
    assert ea.equals(eb)  # and every other column, per-episode stats included
    (la,), (lb,) = [e for e in a.log() if e.version == 1], [e for e in b.log() if e.version == 1]
    assert la.summary == lb.summary and la.message == lb.message

    for eid in ea["episode_id"].to_pylist():
        assert a.frames(eid).equals(b.frames(eid)), eid

    def videos(lk):
        ds = lk.table("videos")
        meta = ds.to_table(columns=[n for n in ds.schema.names if n != "data"], with_row_id=True)
        rows = sorted(meta.to_pylist(), key=lambda r: (r["episode_id"], r["camera"]))
        blobs = ds.take_blobs("data", ids=[r["_rowid"] for r in rows])
        return [({k: v for k, v in r.items() if k != "_rowid"}, blob.read()) for r, blob in zip(rows, blobs)]

    va, vb = videos(a), videos(b)
    assert len(va) == len(vb) == 12  # 6 episodes x 2 cameras
    for (ma, da), (mb, db) in zip(va, vb):
        assert ma == mb
        assert len(da) > 0 and da == db, (ma["episode_id"], ma["camera"])
    eid, cam = va[0][0]["episode_id"], va[0][0]["camera"]
    assert np.array_equal(a.video(eid, cam), b.video(eid, cam))

    sa, sb = a.stats(), b.stats()
    assert sa.keys() == sb.keys() and len(sa) > 0
    for feature in sa:
        assert sa[feature].keys() == sb[feature].keys()
        for k in sa[feature]:
            np.testing.assert_array_equal(sa[feature][k], sb[feature][k], err_msg=f"{feature}/{k}")
