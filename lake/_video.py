"""Video segments: cut an episode out of a source mp4 without re-encoding, and decode it back.

What the lake stores per (episode, camera) is the *elementary stream* of the GOPs that cover the episode:
the compressed packets back to back, their offsets, pts and keyframe flags, and the codec's extradata.
Compared with keeping an mp4 per episode this drops the container (no demuxing on read, no muxer quirks
with B-frames or edit lists), keeps the source bits exactly (decoded frames equal the source's, bit for bit),
and the packet index lets a reader start at any keyframe. Decoding goes straight to a codec context.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import _av
from ._lerobot import EpisodeError


@dataclass
class Stream:
    """All packets of one video stream, in decode order."""

    codec: str
    extradata: bytes | None
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    data: list[bytes]
    pts: np.ndarray  # int64, in time_base
    key: np.ndarray  # bool


@dataclass
class Segment:
    """Packets covering one episode; ``skip`` decoded frames precede the episode's first frame."""

    codec: str
    extradata: bytes | None
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    data: bytes
    offsets: np.ndarray  # int64 (P+1,)
    pts: np.ndarray  # int64 (P,)
    key: np.ndarray  # bool (P,)
    skip: int = 0
    frames: int = 0


def demux(file, item: str) -> Stream:
    """Read every packet of the first video stream of ``file`` (path or file object)."""
    import av

    try:
        with av.open(file) as c:
            if not c.streams.video:
                raise EpisodeError(item, "no video stream")
            s = c.streams.video[0]
            data, pts, key = [], [], []
            for p in c.demux(s):
                if p.size == 0:
                    continue  # the flush packet
                if p.pts is None:
                    raise EpisodeError(item, "packet without pts")
                data.append(bytes(p))
                pts.append(p.pts)
                key.append(p.is_keyframe)
            cc = s.codec_context
            return Stream(cc.name, bytes(cc.extradata) if cc.extradata else None, cc.width, cc.height,
                          cc.pix_fmt or "yuv420p", Fraction(s.time_base), data,
                          np.asarray(pts, np.int64), np.asarray(key, bool))
    except EpisodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise EpisodeError(item, f"unreadable video ({str(e).splitlines()[0][:160]})") from None


def cut(s: Stream, from_ts: float, to_ts: float, item: str) -> Segment:
    """The whole GOPs (decode order, keyframe to keyframe) that hold every frame shown in [from_ts, to_ts)."""
    times = s.pts.astype(np.float64) * float(s.time_base)
    eps = 1e-6
    keys = np.flatnonzero(s.key)
    if len(keys) == 0:
        raise EpisodeError(item, "video has no keyframe")
    inside = np.flatnonzero((times >= from_ts - eps) & (times < to_ts - eps))
    if len(inside) == 0:
        raise EpisodeError(item, f"video has no frame in [{from_ts:.3f}, {to_ts:.3f}) s")
    first, last = inside.min(), inside.max()
    start = keys[keys <= first]
    if len(start) == 0:
        raise EpisodeError(item, "episode starts before the first keyframe")
    start = start[-1]
    after = keys[keys > last]
    stop = after[0] if len(after) else len(s.data)
    chunk = s.data[start:stop]
    offsets = np.zeros(len(chunk) + 1, np.int64)
    np.cumsum([len(b) for b in chunk], out=offsets[1:])
    return Segment(s.codec, s.extradata, s.width, s.height, s.pix_fmt, s.time_base, b"".join(chunk), offsets,
                   s.pts[start:stop].copy(), s.key[start:stop].copy())


class DecodeError(EpisodeError):
    """A segment did not decode cleanly; ``pts`` is that of the first bad frame (or packet)."""

    def __init__(self, reason: str, pts: int):
        super().__init__("video", reason)
        self.pts = pts


def decode(seg: Segment, fmt: str | None = "rgb24", strict: bool = True):
    """Decode a segment; returns (frames in presentation order, their pts). ``fmt=None`` keeps av.VideoFrame.

    ``strict`` (ingest, ``lake verify --deep``): FFmpeg's error detection is on (``err_detect=explode``: a
    damaged packet fails instead of being concealed) and a frame the decoder flags as corrupt (concealed
    errors: ``AVFrame.decode_error_flags``) or a packet that yields no frame is an error too. Errors raise
    DecodeError with the first bad frame's pts. Strict decoding runs on one thread: FFmpeg's frame threads
    report errors late, and they log them through PyAV's callback, which needs the GIL while freeing the context
    holds it (most likely the hang seen on damaged h264). Ingest's parallelism is Ray tasks anyway. Without
    ``strict`` only errors the decoder itself raises do.
    """
    import av

    ctx = av.CodecContext.create(_decoder(seg.codec), "r")
    if seg.extradata:
        ctx.extradata = seg.extradata
    if strict:
        ctx.options = {"err_detect": "explode"}
    if strict:  # errors surface at the packet that holds them (dav1d's frame delay follows its thread count too)
        ctx.thread_count = 1
    else:
        ctx.thread_type = "AUTO"
    out, pts = [], []

    def take(frames):
        for fr in frames:
            # threads=1: swscale's own threading costs more than it saves on small frames
            out.append(_av.to_ndarray(fr, fmt) if fmt else fr)
            pts.append(fr.pts)

            if strict and fr.is_corrupt:
                raise DecodeError(f"decoder concealed errors in the frame with pts {fr.pts}", fr.pts)

    mv = memoryview(seg.data)
    i = 0
    try:
        for i in range(len(seg.pts)):
            pkt = av.Packet(mv[seg.offsets[i]:seg.offsets[i + 1]])
            pkt.pts = int(seg.pts[i])
            pkt.time_base = seg.time_base
            take(ctx.decode(pkt))
        take(ctx.decode(None))
    except (av.error.FFmpegError, DecodeError) as e:
        if isinstance(e, DecodeError):
            raise
        at = int(seg.pts[i]) if len(seg.pts) else 0
        raise DecodeError(f"corrupt video data at the packet with pts {at} ({str(e).splitlines()[0][:160]})",
                          at) from None
    if strict and len(pts) != len(seg.pts):
        lost = sorted(set(seg.pts.tolist()) - set(pts)) or [int(seg.pts[-1])]
        raise DecodeError(f"{len(seg.pts) - len(pts)} of {len(seg.pts)} packets gave no frame "
                          f"(first: pts {lost[0]})", int(lost[0]))
    order = np.argsort(np.asarray(pts, np.int64), kind="stable")
    return [out[i] for i in order], np.asarray(pts, np.int64)[order]


def _decoder(codec: str) -> str:
    # libdav1d is the fast AV1 decoder shipped with PyAV; FFmpeg's native "av1" needs hwaccel.
    if codec in ("av1", "libdav1d", "libaom-av1", "libsvtav1"):
        import av

        return "libdav1d" if "libdav1d" in av.codecs_available else "av1"
    return codec


def select(seg: Segment, pts: np.ndarray, from_ts: float, length: int, fps: float, item: str) -> int:
    """Index of the episode's first frame among decoded frames; checks all ``length`` frames line up.

    Frame i of the episode is the one shown at ``from_ts + i / fps`` (as LeRobot queries it), within a
    quarter frame. Raises EpisodeError when the video is short or frames are missing.
    """
    times = pts.astype(np.float64) * float(seg.time_base)
    want = from_ts + np.arange(length) / fps
    tol = 0.25 / fps
    j = np.searchsorted(times, want - tol)
    ok = (j < len(times)) & (np.abs(times[np.minimum(j, len(times) - 1)] - want) <= tol)
    if not ok.all():
        found = int(ok.sum())
        raise EpisodeError(item, f"video is shorter than its episode: {found} of {length} frames present"
                           if not ok[found:].any() else f"video frame for timestamp {want[np.argmin(ok)]:.3f}s is missing")
    if not (np.diff(j) == 1).all():
        raise EpisodeError(item, "video frames do not match the episode's timestamps one to one")
    return int(j[0])


def image_stats(frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """LeRobot-style per-channel image stats in [0, 1], shape (3, 1, 1), over every frame.

    Exact and cheap: uint8 pixels reduce to a 256-bin histogram per channel, from which min/max, moments and
    numpy's (linear-interpolation) q01/q99 follow without sorting anything.
    """
    x = np.stack(frames).reshape(-1, 3)
    hist = np.stack([np.bincount(x[:, c], minlength=256) for c in range(3)]).astype(np.float64)  # (3, 256)
    n = x.shape[0]
    v = np.arange(256, dtype=np.float64)
    mean = hist @ v / n
    var = np.maximum(hist @ v**2 / n - mean**2, 0.0)
    cum = np.cumsum(hist, axis=1)

    def quantile(q: float) -> np.ndarray:
        h = (n - 1) * q
        lo, hi = int(np.floor(h)), int(np.ceil(h))
        at = lambda k: np.array([np.searchsorted(cum[c], k, side="right") for c in range(3)], np.float64)  # noqa: E731
        a, b = at(lo), at(hi)
        return a + (h - lo) * (b - a)

    nz = hist > 0
    out = {"mean": mean, "std": np.sqrt(var), "min": nz.argmax(1).astype(np.float64),
           "max": 255.0 - nz[:, ::-1].argmax(1), "q01": quantile(0.01), "q99": quantile(0.99)}
    return {"count": np.array([len(frames)]), **{k: (val / 255.0).reshape(3, 1, 1) for k, val in out.items()}}


def decode_frames(seg: Segment, blob, idx: np.ndarray, fmt: str = "rgb24") -> np.ndarray:
    """Frames ``idx`` (episode-relative, in range, any order, repeats allowed) of a segment, decoding only the GOPs
    that hold them; ``seg.data`` is not used: ``blob`` (file-like, seek/read) holds the packets and only the byte
    ranges of those GOPs are read. Returns (len(idx), H, W, 3) uint8, equal to ``decode(seg)`` frames
    ``seg.skip + idx``.

    Frame i is the (skip + i)-th in presentation order. Decoding for it starts at the last keyframe packet (decode
    order, at or before the frame's packet) whose pts is at most the frame's and feeds packets until the frame comes
    out, flushing the decoder at the end of the GOP run; frames whose runs of packets overlap share one decoder.
    """
    import av

    idx = np.asarray(idx, np.int64).reshape(-1)
    out = np.empty((len(idx), seg.height, seg.width, 3), np.uint8)
    if len(idx) == 0:
        return out
    pts, key, offsets = np.asarray(seg.pts, np.int64), np.asarray(seg.key, bool), np.asarray(seg.offsets, np.int64)
    order = np.argsort(pts, kind="stable")
    want = np.unique(idx)
    targets = pts[order[seg.skip + want]]  # pts of each wanted frame
    packets = order[seg.skip + want]  # their packets (decode order)
    keys = np.flatnonzero(key)
    runs: list[list] = []  # [first packet, stop packet, {pts: frame index}]
    for f, t, p in sorted(zip(want.tolist(), targets.tolist(), packets.tolist()), key=lambda x: x[2]):
        ok = keys[(keys <= p) & (pts[keys] <= t)]
        start = int(ok[-1]) if len(ok) else 0
        nxt = keys[keys > p]
        stop = int(nxt[0]) if len(nxt) else len(pts)
        if runs and start < runs[-1][1]:  # inside the packets this run feeds already: one decoder
            runs[-1][1] = max(runs[-1][1], stop)
            runs[-1][2][t] = f
        else:
            runs.append([start, stop, {t: f}])
    got: dict[int, np.ndarray] = {}
    try:
        for start, stop, need in runs:
            ctx = av.CodecContext.create(_decoder(seg.codec), "r")
            if seg.extradata:
                ctx.extradata = seg.extradata
            # one thread: a run is a few frames, which frame threads cost more to start than they save (PushT
            # random frames: 1.2 -> 0.94 ms each), and DataLoader workers would each start one per core
            ctx.thread_count = 1
            blob.seek(int(offsets[start]))
            data = memoryview(blob.read(int(offsets[stop] - offsets[start])))
            base, left = int(offsets[start]), set(need)

            def take(frames):
                for fr in frames:
                    if fr.pts in left:
                        # threads=1 as in decode(): the same conversion, bit for bit
                        got[need[fr.pts]] = _av.to_ndarray(fr, fmt)
                        left.discard(fr.pts)

            for i in range(start, stop):
                pkt = av.Packet(data[offsets[i] - base:offsets[i + 1] - base])
                pkt.pts = int(pts[i])
                pkt.time_base = seg.time_base
                take(ctx.decode(pkt))
                if not left:
                    break
            if left:
                take(ctx.decode(None))
            if left:
                raise EpisodeError("video", f"frames with pts {sorted(left)[:8]} did not decode")
    except av.error.FFmpegError as e:
        raise EpisodeError("video", f"corrupt video data ({str(e).splitlines()[0][:160]})") from None
    for j, f in enumerate(idx.tolist()):
        out[j] = got[f]
    return out


@dataclass
class VideoReader:
    """One camera of one episode, opened once (its packet index and a handle on its bytes in the lake) and
    decoded as often as needed: ``frames(idx)`` decodes only the GOPs holding ``idx``, ``all()`` every frame.
    Opening costs a Lance blob lookup (~0.35 ms here), a read of a few frames about as much: a map-style
    dataset keeps readers of the episodes it is serving. Not for concurrent use (the handle seeks)."""

    episode_id: str
    camera: str
    segment: Segment
    blob: object  # file-like (seek / read): Lance's BlobFile

    def __len__(self) -> int:
        return int(self.segment.frames)

    def frames(self, frames) -> np.ndarray:
        """uint8 (len(frames), H, W, 3) for episode-relative indices (any order, repeats allowed, negatives
        count from the end). IndexError for indices outside the episode."""
        idx = np.asarray(frames, dtype=np.int64).reshape(-1)
        n = len(self)
        if ((idx < -n) | (idx >= n)).any():
            raise IndexError(f"frame indices out of range for episode {self.episode_id} of {n} frames: "
                             f"{idx[(idx < -n) | (idx >= n)][:8].tolist()}")
        try:
            return decode_frames(self.segment, self.blob, idx % n if n else idx)
        except EpisodeError as e:
            raise self._named(e) from None

    def all(self) -> np.ndarray:
        """Every frame of the episode, uint8 (T, H, W, 3)."""
        self.blob.seek(0)
        seg = self.segment
        try:
            decoded, _ = decode(Segment(seg.codec, seg.extradata, seg.width, seg.height, seg.pix_fmt, seg.time_base,
                                        self.blob.read(), seg.offsets, seg.pts, seg.key, seg.skip, seg.frames))
        except EpisodeError as e:
            raise self._named(e) from None
        return np.stack(decoded[seg.skip:seg.skip + seg.frames])

    def _named(self, e: EpisodeError) -> EpisodeError:
        """The error naming this video (the decoders only know they decode "video")."""
        return EpisodeError(f"episode {self.episode_id} camera {self.camera}", e.reason)
