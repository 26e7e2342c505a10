"""The app without a browser (Starlette's test client): videos are the stored bits remuxed, byte ranges work,
hostile input is refused before Lance sees it or by Lance's parser, and an s3:// lake renders without its
credentials."""

from __future__ import annotations

import io
import logging
import socket

import numpy as np
import pytest


@pytest.fixture(scope="module")
def client(demo_lake):
    from starlette.testclient import TestClient

    from lakeview import make_app

    return TestClient(make_app(demo_lake), raise_server_exceptions=False)


def _decode_mp4(data: bytes) -> list[np.ndarray]:
    import av

    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_h264_video_is_the_stored_stream_remuxed_bit_for_bit(client, demo_lake):
    eid = demo_lake.episodes(filter="source = 'pusht_v3'")["episode_id"][0].as_py()
    r = client.get(f"/video/{eid}", params={"camera": "observation.images.top"})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    meta = client.get(f"/video/{eid}", params={"camera": "observation.images.top", "meta": "1"}).json()
    frames = demo_lake.video(eid, "observation.images.top")
    assert meta["codec"] == "h264" and len(meta["times"]) == len(frames)
    decoded = _decode_mp4(r.content)
    first = round(meta["times"][0] * 10)  # frames of the GOP before the episode starts come first
    assert np.array_equal(np.stack(decoded[first:first + len(frames)]), frames)  # no re-encode: exact


def test_av1_video_remuxes_into_mp4(client, demo_lake):
    eid = demo_lake.episodes(filter="source = 'pusht_v3'")["episode_id"][1].as_py()
    r = client.get(f"/video/{eid}", params={"camera": "observation.images.wrist"})
    meta = client.get(f"/video/{eid}", params={"camera": "observation.images.wrist", "meta": "1"}).json()
    assert r.status_code == 200 and meta["codec"] == "av1"
    import av

    with av.open(io.BytesIO(r.content)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (meta["width"], meta["height"])
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    start = round(meta["times"][0] * 10)
    if start == 0:
        assert np.array_equal(first, demo_lake.video(eid, "observation.images.wrist", frames=[0])[0])


def test_byte_ranges_serve_the_asked_slice(client, demo_lake):
    eid = demo_lake.episodes()["episode_id"][0].as_py()
    cam = demo_lake.episodes(filter=f"episode_id = '{eid}'")["cameras"][0].as_py()[0]
    whole = client.get(f"/video/{eid}", params={"camera": cam}).content
    part = client.get(f"/video/{eid}", params={"camera": cam}, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole)}"
    tail = client.get(f"/video/{eid}", params={"camera": cam}, headers={"Range": "bytes=-5"})
    assert tail.content == whole[-5:]
    assert client.get(f"/video/{eid}", params={"camera": cam},
                      headers={"Range": f"bytes={len(whole)}-"}).status_code == 416


@pytest.mark.parametrize("text, message", [
    ("length > 1; DROP TABLE episodes", "';'"), ("length > 1 -- comment", "'--'"), ("task = 'unterminated", "unterminated"),
    ("no_such_column > 1", "No field named no_such_column"), ("read_file('/etc/passwd')", "filter rejected"),
    ("x" * 2001, "longer than"),
])
def test_hostile_filters_are_refused_with_a_clear_message(client, text, message):
    r = client.get("/episodes", params={"filter": text})
    assert r.status_code == 400 and message in r.text.replace("&#39;", "'")
    assert "Traceback" not in r.text and ".rs:" not in r.text


def test_quotes_inside_string_literals_are_fine(client, demo_lake):
    r = client.get("/episodes", params={"filter": "task = 'it''s; -- not a comment' OR length > 0"})
    assert r.status_code == 200
    assert f'<b id="total">{demo_lake.episodes().num_rows}</b>' in r.text


def test_markup_in_input_is_escaped(client):
    r = client.get("/episodes", params={"filter": "<script>alert(1)</script>"})
    assert r.status_code == 400 and "<script>alert(1)" not in r.text and "&lt;script&gt;" in r.text


def test_a_page_at_another_version_reads_that_version(client, demo_lake):
    r = client.get("/episodes", params={"at": "first"})
    assert r.status_code == 200 and '<b id="total">6</b>' in r.text
    assert client.get("/episodes", params={"at": "nosuchtag"}).status_code == 404


# --- s3 ------------------------------------------------------------------------------------------------------

KEY, SECRET, REGION = "serve-key-id", "serve-very-secret-key", "us-east-1"


@pytest.fixture(scope="module")
def s3_lake(pusht_v3, ray_session):
    from moto.server import ThreadedMotoServer

    import lake

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket="views")
        opts = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_endpoint": endpoint,
                "aws_region": REGION, "allow_http": "true"}
        lk = lake.open("s3://views/lake", storage_options=opts)
        lk.ingest(pusht_v3, progress=False)
        yield lk
    finally:
        server.stop()


@pytest.mark.slow
def test_s3_lake_pages_render_without_credentials(s3_lake):
    from starlette.testclient import TestClient

    from lakeview import make_app

    c = TestClient(make_app(s3_lake), raise_server_exceptions=False)
    eid = s3_lake.episodes()["episode_id"][0].as_py()
    pages = ["/", "/diff?a=0&b=1", "/version/1", "/episodes", f"/episode/{eid}", "/stats", "/packs", "/lineage",
             "/episodes?filter=nope%20%3E%201", "/episode/nope"]
    for path in pages:
        r = c.get(path)
        assert r.status_code < 500, (path, r.status_code)
        assert SECRET not in r.text and KEY not in r.text, path
    assert "s3://views/lake" in c.get("/").text
    v = c.get(f"/video/{eid}", params={"camera": "observation.images.top"})
    assert v.status_code == 200 and len(_decode_mp4(v.content)) >= s3_lake.episodes()["length"][0].as_py()


def test_public_uri_drops_userinfo_and_query():
    from lakeview import public_uri

    assert public_uri("s3://AKIA:secret@bucket/lake?token=x") == "s3://bucket/lake"
    assert public_uri("/data/lake") == "/data/lake"


def test_serve_refuses_a_missing_lake_with_one_line(tmp_path, capsys):
    from lake.cli import main

    assert main(["serve", "--lake", str(tmp_path / "nothing"), "--port", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no lake at" in err[0]
