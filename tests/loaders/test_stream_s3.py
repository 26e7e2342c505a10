"""Streaming from an s3:// lake (moto's S3 server on 127.0.0.1), through an outage of the endpoint.

The outage is real but keeps the bucket: a small TCP proxy sits in front of moto (whose in-memory state a
restart would lose); stopping it refuses new connections and cuts open ones, starting it again on the same
port brings the endpoint back. Lance's own client retries are turned off (``client_max_retries=0``), so
what bridges the outage is the loader's retry with backoff.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

import lake
from loaders import retry
from packed_tables import LAYOUT, synthetic_packs, write_packed_table

pytestmark = pytest.mark.slow

BUCKET, KEY, SECRET, REGION = "loaders", "testing-key", "testing-secret", "us-east-1"


class Proxy:
    """TCP forwarder 127.0.0.1:port -> 127.0.0.1:target that can be stopped and started on the same port."""

    def __init__(self, target: int):
        self.target, self.port, self._srv = target, 0, None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> "Proxy":
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(128)
        self.port, self._srv = srv.getsockname()[1], srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._srv.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def proxy():
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port  # noqa: SLF001 - moto picks the free port; no public accessor
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name=REGION).create_bucket(Bucket=BUCKET)
    p = Proxy(port).start()
    yield p
    p.stop()
    server.stop()


@pytest.fixture(scope="module")
def s3_packed(proxy, tmp_path_factory):
    """(s3 lake, local lake) holding the same synthetic packed table."""
    options = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_region": REGION,
               "aws_endpoint": f"http://127.0.0.1:{proxy.port}", "allow_http": "true", "client_max_retries": "0"}
    table = synthetic_packs(LAYOUT, episodes=16, seed=5)
    s3 = lake.open(f"s3://{BUCKET}/lake", storage_options=options)
    local = lake.open(tmp_path_factory.mktemp("s3ref") / "lake")
    for lk in (s3, local):
        write_packed_table(lk, table, rows_per_file=8)
    return s3, local


def _run(loader, during=None):
    out = []
    for i, b in enumerate(loader):
        out.append((b.pack_ids.tolist(), b.origin, b.image_patches.sum().item(), b.actions.sum().item()))
        if during:
            during(i)
    return out


def test_an_s3_lake_streams_the_same_batches_as_a_local_one(s3_packed):
    s3, local = s3_packed
    assert s3.uri.startswith("s3://")
    assert _run(s3.stream("train", batch_packs=2, seed=3)) == _run(local.stream("train", batch_packs=2, seed=3))


def test_an_s3_lake_streams_from_a_local_cache_after_the_first_loader(s3_packed, tmp_path):
    s3, local = s3_packed
    want = _run(local.stream("train", batch_packs=2, seed=3, epoch=1))
    from loaders import cache

    takes, direct = cache.STATS["takes"], cache.STATS["direct"]
    first = s3.stream("train", batch_packs=2, seed=3, epoch=1, cache_dir=tmp_path, progress=False)
    assert first.cache.dir.parent == tmp_path and _run(first) == want
    assert cache.STATS["takes"] - takes <= 2  # no limit: the split's shards in one read or two
    assert cache.STATS["direct"] == direct  # from an object store the first batch waits for its shards
    fetches = cache.STATS["fetches"]
    again = s3.stream("train", batch_packs=2, seed=3, epoch=1, cache_dir=tmp_path, progress=False)
    assert again.cache.dir == first.cache.dir and _run(again) == want
    assert cache.STATS["fetches"] == fetches  # every shard came from the node cache


# random: groups of 1, 2, 4, ... batches, each read as the group two before it starts: stopped after batch 0 with
# no read-ahead of batches, the fourth group (batches 7-) is certainly read after the endpoint went away (stopped
# later, every group could already have been read: a race the test lost now and then). none: one scan of the split
@pytest.mark.parametrize("shuffle,stop_after,prefetch", [("random", 0, 0), ("none", 2, 2)])
def test_an_endpoint_restart_mid_epoch_loses_and_repeats_nothing(s3_packed, proxy, shuffle, stop_after, prefetch):
    s3, local = s3_packed
    want = _run(local.stream("train", seed=4, shuffle=shuffle))
    retries = retry.STATS["retries"]
    outage = {}

    def restart_after(i: int) -> None:
        if i == stop_after:  # the endpoint goes away mid-epoch, with reads to come, and comes back 1.5 s later
            proxy.stop()
            outage["at"] = time.monotonic()
            threading.Timer(1.5, proxy.start).start()

    # one pack per batch, so that reads are still to come when the endpoint goes away: further groups, or the
    # rest of the one scan (which then resumes after the last batch it delivered)
    got = _run(s3.stream("train", seed=4, prefetch=prefetch, shuffle=shuffle), during=restart_after)
    assert got == want  # every pack once, in order, same bytes
    assert retry.STATS["retries"] > retries  # the loader's retry, not luck, bridged the outage
    assert len(want) >= 8 and "at" in outage


@pytest.fixture(scope="module")
def counted():
    """(endpoint, log) of a moto S3 server whose WSGI app is wrapped to log each request it answers:
    (method, path, Range header)."""
    import boto3
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app, log = DomainDispatcherApplication(create_backend_app), []

    def logged(environ, start_response):
        log.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("HTTP_RANGE")))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, logged, True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name=REGION).create_bucket(Bucket=BUCKET)
    yield endpoint, log
    server.shutdown()


def test_a_cold_start_reads_the_pack_index_side_file_and_each_data_file_once(counted, tmp_path):
    """A stream's cold start on S3 reads no data file of the packed table (the packer's pack index side file
    instead) and opens the table once; the cold fill then GETs each data file once, whole (after a HEAD). Before
    the side file and whole-file fills (session 9's code) the same start and epoch made 4 manifest requests of the
    packed table, GETs on every data file before the first batch, and several range GETs per data file in the
    fill (the PushT split through moto: 66 requests in all, now 21)."""
    from packers import pack_index

    from loaders import fragfiles

    endpoint, log = counted
    options = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_region": REGION,
               "aws_endpoint": endpoint, "allow_http": "true"}
    table = synthetic_packs(LAYOUT, episodes=16, seed=5, splits={"train": 1.0})
    s3 = lake.open(f"s3://{BUCKET}/counted", storage_options=options)
    local = lake.open(tmp_path / "local")
    for lk in (s3, local):
        write_packed_table(lk, table, rows_per_file=8)
    pack_index.ensure(s3, "packed_test")  # what the packer does after its commit
    sizes = {f.metadata.files[0].path: f.metadata.files[0].file_size_bytes
             for f in s3.table("packed_test").get_fragments()}
    files = set(sizes)
    assert len(files) >= 3
    want = _run(local.stream("train", batch_packs=2, seed=3))

    def data(entries):  # requests on the packed table's data files
        return [e for e in entries if "/counted/packed_test.lance/data/" in e[1]]

    start = len(log)
    loader = lake.open(f"s3://{BUCKET}/counted", storage_options=options).stream(
        "train", batch_packs=2, seed=3, cache_dir=tmp_path / "cache", progress=False)
    opened = log[start:]
    assert data(opened) == []  # the plan came from the side file
    assert sum("/counted/packed_test.lance/_versions/" in e[1] for e in opened) <= 2  # one open (HEAD + GET)
    assert sum("/_lake/pack-index-v" in e[1] for e in opened if e[0] == "GET") == 1
    fetched = fragfiles.STATS["files"]
    assert _run(loader) == want
    gets = [(p.rsplit("/", 1)[-1], r) for m, p, r in data(log[start:]) if m == "GET"]
    assert sorted(p for p, _ in gets) == sorted(files)  # each data file once
    assert all(r in (None, f"bytes=0-{sizes[p] - 1}") for p, r in gets)  # the whole object
    assert all(m in ("GET", "HEAD") for m, _, _ in data(log[start:]))
    assert fragfiles.STATS["files"] - fetched == len(files)
