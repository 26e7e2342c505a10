"""A stored camera segment as a playable mp4, by remuxing its packets (no re-encode: the browser sees the bits
the lake holds).

The lake keeps each (episode, camera) as an elementary stream plus a packet index (``lake._video``). PyAV's mp4
muxer needs a stream whose codec parameters say h264 / AV1 without opening an encoder (which would write its own
extradata); ``add_stream_from_template`` gives exactly that, so a one-frame template file per codec is encoded
once per process and its stream used as the template, with the stored extradata and size put in its place.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_AV1 = {"av1", "libdav1d", "libaom-av1", "libsvtav1", "librav1e"}


@dataclass(frozen=True)
class Clip:
    """An mp4 of one camera of one episode. ``times[i]``: seconds into the mp4 at which episode frame ``i``
    shows (the segment starts at a keyframe, which may precede the episode's first frame)."""

    data: bytes
    times: list[float]
    codec: str
    width: int
    height: int


def family(codec: str) -> str:
    """The codec's family name in a container (``h264``, ``av1``, ...), from a decoder or encoder name."""
    return "av1" if codec in _AV1 else codec


@lru_cache(maxsize=None)
def _template(codec: str) -> bytes:
    import av

    from lake._sample import pick_encoder

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream(pick_encoder(codec), rate=10)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def remux(reader) -> Clip:
    """The mp4 of a ``lake`` VideoReader (``Lake.video_reader``): every stored packet, pts shifted to start at 0.

    Raises ValueError for a codec this build cannot mux into mp4.
    """
    import av

    seg = reader.segment
    name = family(seg.codec)
    if name not in ("h264", "av1"):
        raise ValueError(f"episode {reader.episode_id} camera {reader.camera}: codec {seg.codec} is not playable "
                         f"in a browser mp4")
    reader.blob.seek(0)
    data = memoryview(reader.blob.read())
    pts = np.asarray(seg.pts, np.int64)
    base = int(pts.min()) if len(pts) else 0
    buf = io.BytesIO()
    with av.open(io.BytesIO(_template(name))) as tpl, av.open(buf, "w", format="mp4") as out:
        st = out.add_stream_from_template(tpl.streams.video[0], opaque=True)
        cc = st.codec_context
        cc.width, cc.height, cc.pix_fmt = seg.width, seg.height, seg.pix_fmt
        cc.extradata = seg.extradata
        st.time_base = seg.time_base
        for i in range(len(pts)):
            p = av.Packet(data[seg.offsets[i]:seg.offsets[i + 1]])
            p.pts, p.dts = int(pts[i]) - base, None
            p.time_base = seg.time_base
            p.is_keyframe = bool(seg.key[i])
            p.stream = st
            out.mux(p)
    shown = np.sort(pts)[seg.skip:seg.skip + seg.frames]
    times = ((shown - base) * float(seg.time_base)).tolist()
    return Clip(buf.getvalue(), times, name, seg.width, seg.height)
