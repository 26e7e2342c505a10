"""The lake on object storage: a real S3-protocol server (moto's server mode) on 127.0.0.1.

Nothing is patched: Lance (Rust object_store), s3fs and the Ray workers all talk HTTP to the server. The lake's
storage options travel inside the ``Store`` value shipped to the workers, so fragments are written to S3 from
there too. Results are compared with the same source ingested into a local lake (the ``ingested`` fixture).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import numpy as np
import pytest

import lake
import lake.cli
from lake import _versions

pytestmark = pytest.mark.slow

BUCKET = "bucket"
KEY, SECRET, REGION = "testing-key", "testing-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def storage_options(s3_endpoint):
    """Lance-style options (what lake.open takes); s3fs gets them translated by lake._store."""
    return {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_endpoint": s3_endpoint,
            "aws_region": REGION, "allow_http": "true"}


@pytest.fixture(scope="module")
def s3fs_(storage_options):
    import s3fs

    from lake._store import fsspec_options

    return s3fs.S3FileSystem(skip_instance_cache=True, **fsspec_options(storage_options))


def _keys(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return fs.find(f"{BUCKET}/{prefix}")


@pytest.fixture(scope="module")
def s3_lake(storage_options, pusht_v3, ray_session):
    """(lake on s3://bucket/lake holding pusht_v3, the report of that ingest)."""
    lk = lake.open(f"s3://{BUCKET}/lake", create=True, storage_options=storage_options)
    assert lk.version == 0
    rep = lk.ingest(pusht_v3, progress=False)
    assert rep.episodes_added == 6 and rep.version == 1 and not rep.quarantined, rep
    return lk, rep


@pytest.fixture(scope="module")
def s3_source(pusht_v21, s3fs_):
    """The pusht_v21 folder uploaded to s3://bucket/src."""
    s3fs_.put(str(pusht_v21).rstrip("/") + "/", f"{BUCKET}/src", recursive=True)
    keys = _keys(s3fs_, "src")
    assert f"{BUCKET}/src/meta/info.json" in keys and any(k.endswith(".mp4") for k in keys), keys
    return f"s3://{BUCKET}/src"


def _episodes(lk):
    from lake._schema import EPISODES

    return lk.episodes(columns=EPISODES.names).sort_by("episode_id")


def test_s3_lake_holds_the_same_episodes_frames_and_videos_as_a_local_lake(s3_lake, ingested, s3fs_):
    lk, rep = s3_lake
    at = lk.checkout(rep.version)  # later tests add versions; this handle stays at the ingest
    assert at.uri == f"s3://{BUCKET}/lake"
    # The data really is in the bucket (and nothing went to a local folder named "s3:").
    keys = _keys(s3fs_, "lake")
    for table in ["_log", "episodes", "videos", at.episodes()["frames_table"][0].as_py()]:
        assert any(k.startswith(f"{BUCKET}/lake/{table}.lance/_versions/") for k in keys), (table, keys[:5])
        assert any(k.startswith(f"{BUCKET}/lake/{table}.lance/data/") for k in keys), table
    assert not os.path.exists("s3:") and not os.path.exists(os.path.join(str(ingested.uri), "s3:"))

    local = ingested.checkout(1)
    assert _episodes(at).equals(_episodes(local))  # ids, splits, lengths, sources, stats: everything
    eps = at.episodes(columns=["episode_id", "cameras"]).to_pylist()
    assert len(eps) == 6
    for ep in eps:
        assert at.frames(ep["episode_id"]).equals(local.frames(ep["episode_id"])), ep["episode_id"]
        assert len(ep["cameras"]) == 2
        for cam in ep["cameras"]:
            got, want = at.video(ep["episode_id"], cam), local.video(ep["episode_id"], cam)
            assert got.shape == want.shape and got.shape[0] > 0
            assert np.array_equal(got, want), (ep["episode_id"], cam)
    s3_stats, local_stats = at.stats(), local.stats()
    assert s3_stats.keys() == local_stats.keys()
    for f in s3_stats:
        for k in s3_stats[f]:
            np.testing.assert_array_equal(s3_stats[f][k], local_stats[f][k], err_msg=f"{f}/{k}")


def test_reingest_on_s3_is_a_no_op(s3_lake, pusht_v3, storage_options, s3fs_):
    lk, _ = s3_lake
    before_version, before_keys = lk.refresh().version, _keys(s3fs_, "lake")
    rep = lk.ingest(pusht_v3, progress=False)
    assert rep.version is None and rep.episodes_added == 0 and rep.episodes_skipped == 6, rep
    # A fresh handle (new process's view) sees the same head; no Lance version or data file was written.
    again = lake.open(f"s3://{BUCKET}/lake", create=False, storage_options=storage_options)
    assert again.version == before_version == lk.refresh().version
    assert _keys(s3fs_, "lake") == before_keys


def test_versions_tags_checkout_and_diff_on_s3(s3_lake, storage_options, tmp_path_factory):
    lk, rep = s3_lake
    extra = lake.write_pusht_dataset(tmp_path_factory.mktemp("extra") / "extra", episodes=2, version="v3.0",
                                     min_len=10, max_len=14, episodes_per_file=2, seed=11)
    lk.tag("first", rep.version)
    rep2 = lk.ingest(extra, progress=False, message="more pushing")
    assert rep2.episodes_added == 2 and rep2.version == lk.version > rep.version

    lk2 = lake.open(f"s3://{BUCKET}/lake", create=False, storage_options=storage_options)  # what others see
    log = lk2.log()
    assert [e.version for e in log] == list(range(rep2.version, -1, -1))
    by_v = {e.version: e for e in log}
    assert by_v[rep.version].tags == ("first",) and by_v[rep2.version].message == "more pushing"
    assert by_v[rep2.version].summary["episodes_added"] == 2

    old = lk2.checkout("first")
    assert old.version == rep.version and old.episodes().num_rows == 6
    assert lk2.episodes().num_rows == 8
    with pytest.raises(lake.ReadOnlyError):
        old.ingest(extra, progress=False)
    d = lk2.diff("first", rep2.version)
    new_ids = set(lk2.episodes()["episode_id"].to_pylist()) - set(old.episodes()["episode_id"].to_pylist())
    assert len(new_ids) == 2 and d.episodes_added == sorted(new_ids) and d.episodes_removed == []
    assert lk2.diff(rep2.version, "first").episodes_removed == sorted(new_ids)
    with pytest.raises(ValueError):
        lk2.tag("first")
    with pytest.raises(KeyError):
        lk2.checkout("no-such-tag")


def test_concurrent_commits_on_s3_serialize(storage_options):
    """The lake's lock-free commit relies on Lance's atomic (conditional-PUT) commits holding on S3."""
    lk = lake.open(f"s3://{BUCKET}/racing", create=True, storage_options=storage_options)
    store, per_writer, writers = lk.store, 3, 4
    won: dict[int, list[int]] = {w: [] for w in range(writers)}
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(w: int) -> None:
        try:
            start.wait()
            for _ in range(per_writer):
                won[w].append(_versions.commit(store, lambda head: {}, f"writer {w}").version)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    chain = _versions.chain(store)
    assert [e.version for e in chain] == list(range(writers * per_writer + 1))  # no version lost or doubled
    got = sorted(v for vs in won.values() for v in vs)
    assert got == list(range(1, writers * per_writer + 1))
    for w, vs in won.items():
        assert all(chain[v].message == f"writer {w}" for v in vs)


def test_source_on_s3_ingests_with_the_same_episode_ids(s3_source, storage_options, ingested):
    lk = lake.open(f"s3://{BUCKET}/from_s3", create=True, storage_options=storage_options)
    rep = lk.ingest(s3_source, source_storage_options=storage_options, progress=False)
    assert rep.episodes_added == 6 and not rep.quarantined, rep

    local = ingested.checkout(1)
    mine = {r["source_episode_index"]: r for r in lk.episodes().to_pylist()}
    theirs = {r["source_episode_index"]: r for r in local.episodes().to_pylist()}
    assert {i: r["episode_id"] for i, r in mine.items()} == {i: r["episode_id"] for i, r in theirs.items()}
    assert {i: (r["length"], r["split"]) for i, r in mine.items()} == {i: (r["length"], r["split"]) for i, r in theirs.items()}
    assert {r["source_uri"] for r in mine.values()} == {s3_source}
    assert {r["codebase_version"] for r in mine.values()} == {"v2.1"}
    for r in mine.values():
        eid = r["episode_id"]
        assert lk.frames(eid).equals(local.frames(eid)), eid
        for cam in r["cameras"]:
            assert lk.video(eid, cam).shape == local.video(eid, cam).shape


def test_cli_on_an_s3_lake_with_aws_environment(s3_endpoint, pusht_v3, s3_source, storage_options, monkeypatch,
                                               capsys, ray_session):
    # ray_session: Ray (and its worker processes) start before the AWS variables below are set.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    for var in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_PROFILE", "LAKE_URI"):
        monkeypatch.delenv(var, raising=False)
    uri = f"s3://{BUCKET}/cli"
    assert lake.cli.storage_options_from_env(uri) == {
        "aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_region": REGION,
        "aws_endpoint": s3_endpoint, "allow_http": "true"}

    assert lake.cli.main(["ingest", str(pusht_v3), "--lake", uri, "-q", "-m", "from the cli"]) == 0
    out = capsys.readouterr().out
    assert f"lake {uri}: version 1 (new); 6 episodes" in out, out
    assert lake.cli.main(["ingest", str(pusht_v3), "--lake", uri, "-q"]) == 0
    assert "version 1 (unchanged); 0 episodes" in capsys.readouterr().out

    assert lake.cli.main(["log", "--lake", uri]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "from the cli" in line or "create lake" in line]
    assert len(rows) == 2 and rows[0].split("│")[1].strip() == "1" and rows[1].split("│")[1].strip() == "0", out
    assert lake.cli.main(["episodes", "--lake", uri]) == 0
    assert "6 episodes" in capsys.readouterr().out

    # What the CLI wrote is a real lake on the server, readable with explicit options.
    lk = lake.open(uri, create=False, storage_options=storage_options)
    assert lk.version == 1 and lk.episodes().num_rows == 6
    # An S3 source through the CLI: the Ray workers (started before these variables were set, like a
    # cluster's) read it with the options the CLI derives from the environment, not from their own env.
    assert lake.cli.main(["ingest", s3_source, "--lake", f"s3://{BUCKET}/cli_src", "-q"]) == 0
    assert f"lake s3://{BUCKET}/cli_src: version 1 (new); 6 episodes" in capsys.readouterr().out
    assert set(lake.open(f"s3://{BUCKET}/cli_src", create=False, storage_options=storage_options)
               .episodes()["episode_id"].to_pylist()) == set(lk.episodes()["episode_id"].to_pylist())
    # And a lake that is not there is an error (exit 1), not an empty lake created by a read command.
    assert lake.cli.main(["log", "--lake", f"s3://{BUCKET}/nothing-here"]) == 1
    assert "no lake at" in capsys.readouterr().err


def test_lance_key_aliases_work_for_lake_and_source(s3_lake, s3_source, s3_endpoint):
    """Lance accepts "endpoint", "region", ... as well as the aws_* names; the s3fs side (sources) must too."""
    from lake._lerobot import read_source

    opts = {"access_key_id": KEY, "secret_access_key": SECRET, "endpoint": s3_endpoint, "region": REGION,
            "allow_http": "true"}
    assert lake.open(f"s3://{BUCKET}/lake", create=False, storage_options=opts).version >= 1
    src_opts = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "endpoint_url": s3_endpoint,
                "aws_default_region": REGION}
    src = read_source(s3_source, src_opts)
    assert len(src.episodes) == 6 and src.codebase_version == "v2.1"


def test_decoded_frames_on_s3_serve_the_map_style_dataset(s3_lake, storage_options):
    from loaders import LeRobotStyleDataset

    lk = lake.open(f"s3://{BUCKET}/lake", create=False, storage_options=storage_options)
    wrist = "observation.images.wrist"
    with_wrist = sum(wrist in (c or []) for c in lk.episodes(columns=["cameras"])["cameras"].to_pylist())
    rep = lk.decode_videos(wrist, progress=False)
    assert rep.videos == with_wrist >= 6 and lk.version == rep.version  # earlier tests may have added episodes
    fresh = lake.open(f"s3://{BUCKET}/lake", create=False, storage_options=storage_options)
    ds = LeRobotStyleDataset(fresh, delta_timestamps={wrist: [-0.1, 0.0]})
    video = LeRobotStyleDataset(fresh, delta_timestamps={wrist: [-0.1, 0.0]}, decoded=False)
    assert {c for _, c in ds._rows} == {wrist} and len(ds._rows) == with_wrist
    idx = [0, 1, len(ds) - 1, len(ds) // 2]
    for i, a, b in zip(idx, ds.__getitems__(idx), video.__getitems__(idx)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch_equal(a[k], b[k]), (i, k)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
