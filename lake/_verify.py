"""``lake verify``: recompute the checksums of everything a lake version holds and compare them.

For the version's episodes: the frame rows of each episode (``frames_checksum``), each camera's packet segment
(``video_checksums``), and that every episode has exactly its rows and one segment per camera. ``deep`` also
decodes every segment strictly (``lake._video.decode``: decoder errors and concealment fail) and checks it
yields the episode's frames. Rows written before checksums existed are counted as ``unchecked``, not as
mismatches. Reading goes table by table, fragment by fragment (frames) and in blob batches (videos), so memory
stays at about one fragment; an unreadable fragment or blob is a mismatch naming the episodes it holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pyarrow as pa

from ._checksum import frames_checksum, segment_checksum


@dataclass(frozen=True)
class Mismatch:
    """One problem: the table, the episode (None if unknown), the camera (videos only) and what is wrong."""

    table: str
    episode: str | None
    camera: str | None
    reason: str

    def __str__(self) -> str:
        where = [f"table {self.table}"] + ([f"episode {self.episode}"] if self.episode else []) \
            + ([f"camera {self.camera}"] if self.camera else [])
        return ": ".join([*where, self.reason])


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` checked; ``ok`` when nothing mismatched. ``bytes`` = payload read (frame rows as Arrow,
    segments), ``unchecked`` = stored units without a checksum (written before checksums existed)."""

    version: int
    deep: bool
    episodes: int
    segments: int
    unchecked: int
    bytes: int
    seconds: float
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _short(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def verify(lk, deep: bool = False, progress: bool = True, blob_batch: int = 32) -> VerifyReport:
    """Verify the version ``lk`` reads (see the module doc)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bad: list[Mismatch] = []
    if "episodes" not in lk._entry.tables:
        return VerifyReport(lk.version, deep, 0, 0, 0, 0, time.perf_counter() - t0)
    ds = lk.table("episodes")
    cols = [c for c in ("episode_id", "frames_table", "cameras", "length", "frames_checksum", "video_checksums")
            if c in ds.schema.names]
    eps = ds.to_table(columns=cols).to_pylist()
    counts: dict[str, int] = {}
    for e in eps:
        counts[e["episode_id"]] = counts.get(e["episode_id"], 0) + 1
    bad += [Mismatch("episodes", eid, None, f"episode_id appears in {n} rows") for eid, n in counts.items() if n > 1]
    by_id = {e["episode_id"]: e for e in eps}
    n_segments = sum(len(e["cameras"] or []) for e in by_id.values())
    state = {"bytes": 0, "unchecked": 0}
    with tqdm(total=len(by_id) + n_segments, desc=f"verify v{lk.version}{' (deep)' if deep else ''}", unit="unit",
              disable=not progress) as bar:
        for table in sorted({e["frames_table"] for e in by_id.values()}):
            bad += _frames(lk, table, {k: e for k, e in by_id.items() if e["frames_table"] == table}, state, bar)
        if n_segments:
            bad += _videos(lk, by_id, deep, state, bar, blob_batch)
    return VerifyReport(lk.version, deep, len(by_id), n_segments, state["unchecked"], state["bytes"],
                        time.perf_counter() - t0, bad)


def _frames(lk, table: str, eps: dict[str, dict], state: dict, bar) -> list[Mismatch]:
    """Each episode's frame rows: count and checksum, fragment by fragment."""
    out: list[Mismatch] = []
    try:
        frags = lk.table(table).get_fragments()
    except Exception as e:  # noqa: BLE001 - a missing / unreadable table names every episode in it
        return [Mismatch(table, eid, None, f"table unreadable ({_short(e)})") for eid in sorted(eps)]
    parts: dict[str, list[pa.Table]] = {}
    have: dict[str, int] = {}
    errors: list[str] = []
    done: set[str] = set()

    def finish(eid: str) -> None:
        e = eps[eid]
        t = pa.concat_tables(parts.pop(eid))
        state["bytes"] += t.nbytes
        if e.get("frames_checksum") is None:
            state["unchecked"] += 1
        elif (got := frames_checksum(t)) != e["frames_checksum"]:
            out.append(Mismatch(table, eid, None, f"frame rows checksum mismatch (stored {e['frames_checksum']}, "
                                                  f"computed {got})"))
        done.add(eid)
        bar.update(1)

    for frag in frags:
        try:
            t = frag.to_table()
        except Exception as e:  # noqa: BLE001 - Lance raises many types for damaged files
            errors.append(f"fragment {frag.fragment_id}: {_short(e)}")
            continue
        if t.num_rows == 0:
            continue
        t = t.take(pa.compute.sort_indices(t["episode_id"]))
        ids = t["episode_id"].to_numpy(zero_copy_only=False)
        starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1, [len(ids)]])
        for a, b in zip(starts[:-1], starts[1:]):
            eid = ids[a]
            if eid not in eps:
                continue  # rows of episodes this version does not hold (deleted ones)
            if eid in done:
                out.append(Mismatch(table, eid, None, "more frame rows than the episode's length"))
                continue
            parts.setdefault(eid, []).append(t.slice(int(a), int(b - a)))
            have[eid] = have.get(eid, 0) + int(b - a)
            if have[eid] == eps[eid]["length"]:
                finish(eid)
            elif have[eid] > eps[eid]["length"]:
                parts.pop(eid, None)
                done.add(eid)
                out.append(Mismatch(table, eid, None, f"{have[eid]}+ frame rows, the episode's length is "
                                                      f"{eps[eid]['length']}"))
                bar.update(1)
    why = f"; unreadable: {'; '.join(errors)}" if errors else ""
    for eid in sorted(set(eps) - done):
        out.append(Mismatch(table, eid, None, f"{have.get(eid, 0)} frame rows readable, the episode's length is "
                                              f"{eps[eid]['length']}{why}"))
        bar.update(1)
    return out


def _videos(lk, eps: dict[str, dict], deep: bool, state: dict, bar, batch: int) -> list[Mismatch]:
    """Each (episode, camera): exactly one segment, its checksum, and (deep) a strict decode."""
    out: list[Mismatch] = []
    try:
        ds = lk.table("videos")
        meta = ds.to_table(columns=[n for n in ds.schema.names if n != "data"], with_row_id=True).to_pylist()
    except Exception as e:  # noqa: BLE001
        return [Mismatch("videos", eid, None, f"table unreadable ({_short(e)})") for eid in sorted(eps)]
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in meta:
        rows.setdefault((r["episode_id"], r["camera"]), []).append(r)
    todo = []
    for eid in sorted(eps):
        sums = {v["camera"]: v["checksum"] for v in (eps[eid].get("video_checksums") or [])}
        for cam in eps[eid]["cameras"] or []:
            found = rows.get((eid, cam), [])
            if len(found) != 1:
                out.append(Mismatch("videos", eid, cam, "no segment stored" if not found else
                                    f"{len(found)} segments stored for one camera"))
                bar.update(1)
                continue
            todo.append((eid, cam, found[0], sums.get(cam)))
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        try:
            blobs = ds.take_blobs("data", ids=[r["_rowid"] for _, _, r, _ in chunk])
        except Exception:  # noqa: BLE001 - find the unreadable one(s) one by one
            blobs = [None] * len(chunk)
        for (eid, cam, r, stored), blob in zip(chunk, blobs):
            try:
                if blob is None:
                    blob = ds.take_blobs("data", ids=[r["_rowid"]])[0]
                data = blob.read()
            except Exception as e:  # noqa: BLE001
                out.append(Mismatch("videos", eid, cam, f"segment unreadable ({_short(e)})"))
                bar.update(1)
                continue
            state["bytes"] += len(data)
            if stored is None:
                state["unchecked"] += 1
            else:
                got = segment_checksum(r["codec"], r["extradata"], r["packet_offsets"], r["packet_pts"],
                                       r["packet_key"], data)
                if got != stored:
                    out.append(Mismatch("videos", eid, cam, f"segment checksum mismatch (stored {stored}, "
                                                            f"computed {got})"))
            if deep:
                out += _decode(eid, cam, r, data)
            bar.update(1)
    return out


def _decode(eid: str, cam: str, r: dict, data: bytes) -> list[Mismatch]:
    from ._lerobot import EpisodeError
    from ._video import Segment, decode

    seg = Segment(r["codec"], r["extradata"], r["width"], r["height"], r["pix_fmt"],
                  Fraction(r["time_base_num"], r["time_base_den"]), data, np.asarray(r["packet_offsets"], np.int64),
                  np.asarray(r["packet_pts"], np.int64), np.asarray(r["packet_key"], bool), r["skip"], r["frames"])
    try:
        frames, _ = decode(seg, None, strict=True)
    except EpisodeError as e:
        return [Mismatch("videos", eid, cam, f"strict decode failed: {e.reason}")]
    if len(frames) < seg.skip + seg.frames:
        return [Mismatch("videos", eid, cam, f"decodes to {len(frames)} frames, the episode needs "
                                             f"{seg.skip + seg.frames}")]
    return []
