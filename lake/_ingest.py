"""LeRobot → lake ingestion as a Ray Data job: workers write fragments, the driver commits once.

1. ``read_source`` parses ``meta/`` on the driver; ``units_of`` groups episodes into about two units per CPU of
   whole data files (v3.0: many episodes per parquet/mp4, so each file is opened once per task, not once per
   episode; each unit writes one fragment per table, so a fresh ingest needs no merge). ``_plan`` lists the
   source once: missing / empty videos are reported per file, and episodes whose metadata and file sizes/mtimes
   match a fingerprint the lake holds are left out (no Ray job at all when nothing is left).
2. One Ray Data pass over the units: read the parquet, validate every episode (columns, shapes vs info.json,
   row counts, NaN/inf), derive its content id and skip it if the lake holds it (idempotence; the id set is
   shipped once per worker); demux each mp4 once, cut every new episode's GOPs, decode them to check the
   frames line up with the episode's timestamps, compute stats, and write Lance fragments (frames / videos /
   episodes). Decoding is strict (``_video.decode``) and every unit gets its checksum (``_checksum``); an
   episode held with other video bytes from the same source is replaced. Bad episodes go to the quarantine
   instead; good ones still land. Identical episodes in two units (rare) are resolved after the pass by
   rewriting the later units without them.
3. The driver commits one lake version (``_versions.commit``), re-running on a lost race that overlaps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from . import _stats, _tables, _versions
from ._lerobot import EpisodeError, EpisodeRef, Source, SourceError, content_id, episode_frames, frame_fields, read_source
from ._schema import EPISODES, QUARANTINE, SOURCES, TASKS, VIDEOS, frames_schema, frames_table_name, nest, quarantine_key, task_id
from ._store import Store, filesystem


@dataclass(frozen=True)
class IngestReport:
    """What one ``ingest`` did. ``quarantined`` lists (source, episode or file, reason) that did not land."""

    version: int | None
    episodes_added: int
    frames_added: int
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)
    episodes_skipped: int = 0  # already in the lake (or duplicated within the source)
    seconds: float = 0.0
    episodes_replaced: list[str] = field(default_factory=list)  # ids whose stored video bytes were replaced
    episodes_unchanged: int = 0  # of the skipped: recognised from metadata + file sizes/mtimes, not read


@dataclass(frozen=True)
class Unit:
    data_path: str
    episodes: tuple[EpisodeRef, ...]


class _Replan(Exception):
    """Another writer committed episodes this job also holds: plan again against the new head."""


def split_of(episode_id: str, ratios: dict[str, float]) -> str:
    """Deterministic split from the id alone, so an episode's split never depends on what else is ingested."""
    total = sum(ratios.values())
    if total <= 0 or any(r < 0 for r in ratios.values()):
        raise ValueError(f"split ratios must be non-negative and sum > 0, got {ratios}")
    u = int(hashlib.sha256(episode_id.encode()).hexdigest()[:15], 16) / 16**15
    acc = 0.0
    for name in sorted(ratios):
        acc += ratios[name] / total
        if u < acc:
            return name
    return sorted(ratios)[-1]


UNIT_MAX_FRAMES = 20_000  # frames one task holds at most before writing (its rows, and its demuxed videos)


def units_of(src: Source, parts: int = 8, max_frames: int = UNIT_MAX_FRAMES) -> list[Unit]:
    """Episodes in at most ``parts`` units (more if ``max_frames`` asks) of whole data files (a file with many
    episodes, v3.0, is read once): consecutive files together until ``total frames / parts``, never past
    ``max_frames`` unless one file is bigger (a unit of its own). Each unit becomes one fragment per table: few
    units mean few, large fragments, which commits never need to merge again (``_tables.compact_small``);
    ``parts`` ~ 2 per CPU keeps every CPU busy."""
    by_file: dict[str, list[EpisodeRef]] = defaultdict(list)
    for ep in src.episodes:
        by_file[ep.data_path].append(ep)
    total = sum(ep.length for ep in src.episodes)
    target = max(1, min(max_frames, -(-total // max(1, parts))))
    units: list[Unit] = []
    pending: list[EpisodeRef] = []
    frames = 0

    def flush():
        nonlocal pending, frames
        if pending:
            paths = {e.data_path for e in pending}
            units.append(Unit(pending[0].data_path if len(paths) == 1 else "", tuple(pending)))
        pending, frames = [], 0

    for eps in by_file.values():
        n = sum(e.length for e in eps)
        if frames + n > max_frames:
            flush()
        pending += eps
        frames += n
        if frames >= target:
            flush()
    flush()
    return units


# --- worker stages (run inside Ray tasks) -------------------------------------------------------------------

def _episode_tables(src: Source, unit: Unit, fields: list[pa.Field]):
    """Yield (episode, frames table | EpisodeError), reading each data file once."""
    from ._lerobot import _Reader

    r = _Reader(src.uri, _source_options(src))
    cache: dict[str, pa.Table | EpisodeError] = {}
    for ep in unit.episodes:
        if ep.data_path not in cache:
            cache.clear()  # a unit's episodes come file by file: hold one file at a time
            try:
                cache[ep.data_path] = r.parquet(ep.data_path)
            except EpisodeError as e:
                cache[ep.data_path] = e
        table = cache[ep.data_path]
        if isinstance(table, EpisodeError):
            yield ep, EpisodeError(f"{table.item} episode {ep.index}", table.reason)
            continue
        try:
            yield ep, episode_frames(table, ep, fields, ep.data_path, src.fps)
        except EpisodeError as e:
            yield ep, e


def _source_options(src: Source) -> dict | None:
    return src.info.get("__storage_options__")


_PRESENT: dict = {}  # per worker process: the ids already in the lake, fetched once per ingest


def _present(ref) -> dict[str, tuple[str | None, str]]:
    """episode_id -> (content_hash, source) of the lake's head (hash None for rows from before content hashes)."""
    if isinstance(ref, dict):
        return ref
    if isinstance(ref, (set, frozenset)):  # bare ids (in-process callers): held, bytes unknown -> skipped
        return {e: (None, None) for e in ref}
    if ref not in _PRESENT:
        import ray

        _PRESENT.clear()
        _PRESENT[ref] = ray.get(ref)
    return _PRESENT[ref]


def write_unit(row: dict, *, src: Source, units: list[Unit], fields: list[pa.Field], store: Store,
               frames_table: str, present, split_ratios: dict[str, float], exclude: dict[int, list[str]],
               fingerprints: dict[int, str | None] | None = None) -> dict:
    """One unit, one pass: validate, derive ids, cut video, skip what the lake holds (same id and content
    hash), decode strictly + check against timestamps, write fragments. An episode the lake holds from this
    same source (by name) with other video bytes (same id, another content hash: a repaired source) is written
    again to replace it (``replaced``); the same episode packaged differently by another source is skipped."""
    from ._checksum import content_hash, frames_checksum
    from ._video import DecodeError, cut, decode, demux, image_stats, select

    unit = units[row["unit"]]
    known = _present(present)
    skip = set(exclude.get(row["unit"], ()))
    fingerprints = fingerprints or {}
    fs, root = filesystem(src.uri, _source_options(src))
    streams: dict[str, object] = {}  # each mp4 demuxed once per task

    def stream(path: str):
        if path not in streams:
            try:
                full = f"{root.rstrip('/')}/{path}"
                if not fs.exists(full):
                    raise EpisodeError(path, "video file not found")
                with fs.open(full, "rb") as f:
                    streams[path] = demux(f, path)
            except EpisodeError as e:
                streams[path] = _FileError(path, e.reason)
        s = streams[path]
        if isinstance(s, EpisodeError):
            raise s
        return s

    frames_parts, video_rows, episode_rows, bad, skipped = [], [], [], [], 0
    replaced: list[str] = []
    replaced_frames = 0
    for ep, frames in _episode_tables(src, unit, fields):
        if isinstance(frames, EpisodeError):
            bad.append((frames.item, frames.reason))
            continue
        eid = content_id(frames, ep.tasks)
        if eid in skip or eid in {r["episode_id"] for r in episode_rows}:
            skipped += 1
            continue
        split = split_of(eid, split_ratios)
        try:
            segs = []
            for cam, ref in ep.videos:
                item = f"{ref.path} episode {ep.index}"
                try:
                    seg = cut(stream(ref.path), ref.from_ts, ref.to_ts, item)
                except _FileError as e:  # reported once per file by the driver, with every episode it holds
                    raise _FileError(e.item, e.reason, ep.index) from None
                segs.append((cam, ref, seg, _segment_checksum(seg)))
            chash = content_hash(eid, {cam: c for cam, _, _, c in segs})
            held = known.get(eid, _ABSENT)
            if held is not _ABSENT and (held[0] in (None, chash) or held[1] != src.name):
                skipped += 1  # the same bytes, a row from before content hashes, or another source's copy
                continue
            stats, sketch = _stats.frame_stats(frames), _stats.frame_sketches(frames)
            lr_stats = _stats.lerobot_frame_stats(frames)
            videos = []
            for cam, ref, seg, checksum in segs:
                item = f"{ref.path} episode {ep.index}"
                try:
                    imgs, pts = decode(seg, strict=True)
                except DecodeError as e:
                    frame = round((e.pts * float(seg.time_base) - ref.from_ts) * src.fps)
                    raise EpisodeError(item, f"corrupt video at frame {frame}: {e.reason}") from None
                except EpisodeError as e:
                    raise EpisodeError(item, e.reason) from None
                seg.skip = select(seg, pts, ref.from_ts, ep.length, src.fps, item)
                seg.frames = ep.length
                stats[cam] = image_stats(imgs[seg.skip:seg.skip + ep.length])
                sketch.append(_stats.image_sketch(cam, imgs[seg.skip:seg.skip + ep.length]))
                lr_stats[cam] = _stats.lerobot_image_stats(imgs[seg.skip:seg.skip + ep.length])
                videos.append(_video_row(eid, cam, ref, seg))
        except _FileError as e:
            bad.append((e.item, e.reason, e.index))
            continue
        except EpisodeError as e:
            bad.append((e.item if e.item != "video" else f"episode {ep.index}", e.reason))
            continue
        if held is _ABSENT:
            frames_parts.append(frames.add_column(0, "episode_id", pa.array([eid] * frames.num_rows, pa.string())))
        else:  # same id = same frame rows, already stored: only the episode row and its videos are new
            replaced.append(eid)
            replaced_frames += ep.length
        video_rows += videos
        episode_rows.append({
            "episode_id": eid, "source": src.name, "source_uri": src.uri, "source_episode_index": ep.index,
            "task": ep.tasks[0] if ep.tasks else "", "tasks": list(ep.tasks), "length": ep.length, "split": split,
            "robot_type": src.robot_type, "fps": src.fps, "frames_table": frames_table,
            "cameras": [c for c, _ in ep.videos], "codebase_version": src.codebase_version,
            "stats": _stats.to_rows(stats), "sketch": sketch, "stats_lerobot": _stats.to_lerobot_rows(lr_stats),
            "frames_checksum": frames_checksum(frames), "content_hash": chash,
            "source_fingerprint": fingerprints.get(ep.index),
            "video_checksums": [{"camera": cam, "checksum": c} for cam, _, _, c in segs],
        })
    fschema = frames_schema(fields)
    frags = {
        frames_table: _tables.write_fragments(
            store, frames_table, nest(pa.concat_tables(frames_parts), fschema) if frames_parts else fschema.empty_table(),
            fschema),
        "videos": _tables.write_fragments(store, "videos", pa.Table.from_pylist(video_rows, VIDEOS), VIDEOS),
        "episodes": _tables.write_fragments(store, "episodes", pa.Table.from_pylist(episode_rows, EPISODES), EPISODES),
    }
    return {"unit": row["unit"], "frags": json.dumps(frags), "episodes": json.dumps([r["episode_id"] for r in episode_rows]),
            "frames": sum(r["length"] for r in episode_rows), "bad": json.dumps(bad), "skipped": skipped,
            "seen": sum(e.length for e in unit.episodes),
            "replaced": json.dumps(replaced), "replaced_frames": replaced_frames,
            "tasks": json.dumps(sorted({t for r in episode_rows for t in r["tasks"]}))}


class _FileError(EpisodeError):
    """A video file that cannot be read at all: one quarantine line per file, naming all its episodes."""

    def __init__(self, path: str, reason: str, index: int | None = None):
        super().__init__(path, reason)
        self.index = index


_ABSENT = object()


def _segment_checksum(seg) -> str:
    from ._checksum import segment_checksum

    return segment_checksum(seg.codec, seg.extradata, seg.offsets, seg.pts, seg.key, seg.data)


def _video_row(eid: str, cam: str, ref, seg) -> dict:
    return {
        "episode_id": eid, "camera": cam, "codec": seg.codec, "width": seg.width, "height": seg.height,
        "pix_fmt": seg.pix_fmt, "time_base_num": seg.time_base.numerator, "time_base_den": seg.time_base.denominator,
        "extradata": seg.extradata, "packet_offsets": seg.offsets.tolist(), "packet_pts": seg.pts.tolist(),
        "packet_key": seg.key.tolist(), "skip": seg.skip, "frames": seg.frames, "from_timestamp": ref.from_ts,
        "source_file": ref.path, "data": seg.data,
    }


# --- driver -----------------------------------------------------------------------------------------------

def _existing(store: Store, head: _versions.LogEntry, table: str, column: str) -> set[str]:
    if table not in head.tables:
        return set()
    ds = store.dataset(table, version=head.tables[table])
    if column not in ds.schema.names:  # a column newer than the lake: every row reads null
        return set()
    return set(ds.to_table(columns=[column])[column].to_pylist())


def _hashes(store: Store, head: _versions.LogEntry) -> dict[str, tuple[str | None, str]]:
    """episode_id -> (content_hash, source) in ``head`` (hash None for rows from before content hashes)."""
    if "episodes" not in head.tables:
        return {}
    ds = store.dataset("episodes", version=head.tables["episodes"])
    cols = ["episode_id", "source"] + (["content_hash"] if "content_hash" in ds.schema.names else [])
    t = ds.to_table(columns=cols)
    hashes = t["content_hash"].to_pylist() if "content_hash" in cols else [None] * t.num_rows
    return dict(zip(t["episode_id"].to_pylist(), zip(hashes, t["source"].to_pylist())))


def ingest(store: Store, src_uri: str, *, split_ratios: dict[str, float] | None = None, message: str | None = None,
           source_name: str | None = None, storage_options: dict | None = None, ray_address: str | None = None,
           progress: bool = True, max_replans: int = 5, verify_all: bool = False) -> IngestReport:
    """Ingest a LeRobot v2.x/v3.0 folder. Source-level problems are quarantined, not raised; a missing or
    empty folder raises SourceError (nothing to quarantine, no version). Episodes recognised as unchanged from
    metadata and file sizes/mtimes are not read (``verify_all``: read and compare every one)."""
    from tqdm.auto import tqdm

    from ._plan import check_folder, plan

    t0 = time.perf_counter()
    split_ratios = split_ratios or {"train": 0.9, "val": 0.1}
    split_of("probe", split_ratios)  # validate ratios before any work
    check_folder(src_uri, storage_options)
    try:
        src = read_source(src_uri, storage_options, source_name)
    except SourceError as e:
        name = source_name or src_uri.rstrip("/").rsplit("/", 1)[-1]
        return _quarantine_only(store, name, [(e.path, e.reason)], message, t0)
    if storage_options:
        src.info["__storage_options__"] = storage_options
    fields = frame_fields(src.features)
    fschema = frames_schema(fields)
    frames_table = frames_table_name(fschema)
    pl = plan(src, _existing(store, _versions.head(store), "episodes", "source_fingerprint"), verify_all,
              storage_options)
    early = list(src.problems) + pl.bad  # found in the metadata / the file listing, before any decode
    if not pl.todo:  # nothing to read: no Ray job
        rep = _commit(store, src, _versions.head(store), {}, [], set(), 0, early, pl.unchanged, fschema,
                      frames_table, message, t0)
        return dataclasses.replace(rep, episodes_unchanged=pl.unchanged)
    src = dataclasses.replace(src, episodes=pl.todo)
    from ._ray import ensure_ray, map_units

    ensure_ray(ray_address)

    import ray

    units = units_of(src, parts=2 * int(ray.cluster_resources().get("CPU", 1)))

    for _ in range(max_replans):
        head = _versions.head(store)
        known = _hashes(store, head)
        present = ray.put(known)
        kw = dict(src=src, fields=fields, store=store, frames_table=frames_table, present=present,
                  split_ratios=split_ratios, fingerprints=pl.fingerprints)
        results: dict[int, dict] = {}
        with tqdm(total=sum(e.length for e in src.episodes), desc=f"ingest {src.name}", unit="frame",
                  disable=not progress) as bar:
            for row in map_units(write_unit, len(units), lambda r: bar.update(r["seen"]), units=units, exclude={},
                                 **kw):
                results[row["unit"]] = row
            # The same content in two units (identical episodes in two files): keep the first, rewrite the others.
            exclude = _duplicates_across_units(results)
            if exclude:
                redo = sorted(exclude)
                for row in map_units(write_unit, len(redo), lambda r: None, units=[units[i] for i in redo],
                                     exclude={j: exclude[i] for j, i in enumerate(redo)}, **kw):
                    results[redo[row["unit"]]] = {**row, "unit": redo[row["unit"]]}
        frags: dict[str, list] = defaultdict(list)
        landed: list[str] = []
        tasks: set[str] = set()
        bad: list[tuple[str, str]] = []
        replaced: list[str] = []
        frames_added = skipped = 0
        for i in sorted(results):
            row = results[i]
            for table, fl in json.loads(row["frags"]).items():
                frags[table] += _tables.load_fragments(fl)
            landed += json.loads(row["episodes"])
            tasks.update(json.loads(row["tasks"]))
            frames_added += row["frames"]
            skipped += row["skipped"]
            bad += [tuple(b) for b in json.loads(row["bad"])]
            replaced += json.loads(row.get("replaced", "[]"))
            frames_added -= row.get("replaced_frames", 0)  # their frame rows are stored already
        bad = early + _per_file(bad)
        try:
            rep = _commit(store, src, head, frags, landed, tasks, frames_added, bad, skipped + pl.unchanged,
                          fschema, frames_table, message, t0, known=known, replaced=replaced)
            return dataclasses.replace(rep, episodes_unchanged=pl.unchanged)
        except _Replan:
            continue
    raise _versions.LakeBusy(f"ingest of {src_uri}: other writers kept committing the same episodes")


def _per_file(bad: list[tuple]) -> list[tuple[str, str]]:
    """Episode failures that are a whole file's (item = the file, plus the episode index) merged into one line
    per (file, reason) naming every episode; the others as they are."""
    from ._plan import file_item

    out, files = [], {}
    for b in bad:
        if len(b) == 3 and b[2] is not None:
            files.setdefault((b[0], b[1]), []).append(b[2])
        else:
            out.append((b[0], b[1]))
    return out + [(file_item(path, idx), reason) for (path, reason), idx in files.items()]


def _without(store: Store, table: str, pinned: int | None, ids: list[str]) -> tuple[list, list]:
    """The fragments of ``table`` at ``pinned`` minus the rows of episodes ``ids``: (untouched fragments' metadata,
    new uncommitted fragments holding the other rows of the fragments that had some). Lake commits are Lance
    Overwrites of explicit fragment lists, which refuse deletion files, so a fragment that loses rows is
    rewritten (blobs included): cost is the few fragments that hold a replaced episode, not the table."""
    if pinned is None:
        return [], []
    ds = store.dataset(table, version=pinned)
    pred = "episode_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")"
    # Lance shows a blob column as its own extension type; it is written back as bytes marked as a blob
    blobs = [f.name for f in ds.schema if isinstance(f.type, pa.BaseExtensionType) and "blob" in str(f.type).lower()]
    plain = [n for n in ds.schema.names if n not in blobs]
    schema = pa.schema([pa.field(f.name, pa.large_binary(), metadata={"lance-encoding:blob": "true"})
                        if f.name in blobs else f for f in ds.schema], metadata=ds.schema.metadata)
    keep, rows = [], []
    for frag in ds.get_fragments():
        if frag.count_rows(filter=pred) == 0:
            keep.append(frag.metadata)
            continue
        t = frag.to_table(columns=plain, filter=f"NOT ({pred})", with_row_id=True)
        ids_ = t["_rowid"].to_pylist()
        t = t.drop_columns(["_rowid"])
        for name in blobs:
            data = [b.read() for b in ds.take_blobs(name, ids=ids_)] if ids_ else []
            t = t.append_column(schema.field(name), pa.array(data, pa.large_binary()))
        rows.append(t.select(schema.names).cast(schema))
    rest = [t for t in rows if t.num_rows]
    written = _tables.write_rows(store, table, pa.concat_tables(rest), schema) if rest else []
    return keep, written


def _replace_tables(store, head, batches, replaced) -> dict[str, int]:
    """Commit ``batches`` on ``head``; tables that hold rows of ``replaced`` episodes lose them first (the
    episode row, its videos, and its decoded frames, which ``lake decode`` makes again)."""
    from ._decoded import TABLE as DECODED

    pins = _tables.append_tables(store, head.tables,
                                 {k: v for k, v in batches.items() if k not in ("episodes", "videos")})
    for name in ("episodes", "videos", DECODED):
        if name not in head.tables and name not in batches:
            continue
        schema, new = batches.get(name, (None, []))
        if schema is None:
            schema = store.dataset(name, version=head.tables[name]).schema
        keep, rewritten = _without(store, name, head.tables.get(name), replaced)
        pins[name] = _tables.overwrite_with(store, name, schema, head.tables.get(name), rewritten + list(new),
                                            base=keep)
    return pins


def _duplicates_across_units(results: dict[int, dict]) -> dict[int, list[str]]:
    """unit -> ids it wrote that an earlier unit also wrote."""
    first: dict[str, int] = {}
    out: dict[int, list[str]] = defaultdict(list)
    for i in sorted(results):
        for eid in json.loads(results[i]["episodes"]):
            if eid in first:
                out[i].append(eid)
            else:
                first[eid] = i
    return dict(out)


def _commit(store, src, planned_head, frags, landed, landed_tasks, frames_added, bad, skipped, fschema, frames_table,
            message, t0, known: dict | None = None, replaced: list[str] | None = None):
    quarantined = [(src.name, item, reason) for item, reason in bad]
    replaced = replaced or []
    summary = {"source": src.name, "episodes_added": len(landed) - len(replaced), "frames_added": frames_added,
               "quarantined": len(quarantined)}
    if replaced:
        summary["episodes_replaced"] = len(replaced)

    def build(head: _versions.LogEntry) -> dict[str, int]:
        if head.version != planned_head.version:  # replan when another writer changed any episode we write
            now = _hashes(store, head)
            if any(now.get(e, _ABSENT) != (known or {}).get(e, _ABSENT) for e in landed):
                raise _Replan()
        batches: dict[str, tuple[pa.Schema, list]] = {
            frames_table: (fschema, frags.get(frames_table, [])),
            "videos": (VIDEOS, frags.get("videos", [])),
            "episodes": (EPISODES, frags.get("episodes", [])),
        }
        if landed:
            tasks = sorted(landed_tasks - _existing(store, head, "tasks", "task"))
            rows = pa.table({"task_id": [task_id(t) for t in tasks], "task": tasks}, schema=TASKS)
            batches["tasks"] = (TASKS, _tables.write_rows(store, "tasks", rows, TASKS, head.tables.get("tasks")))
            if frames_table not in _existing(store, head, "sources", "frames_table") or \
                    src.uri not in _existing(store, head, "sources", "source_uri"):
                info = {k: v for k, v in src.info.items() if not k.startswith("__")}
                srow = pa.Table.from_pylist([{
                    "source": src.name, "source_uri": src.uri, "codebase_version": src.codebase_version,
                    "info_json": json.dumps(info), "modality_json": json.dumps(src.modality) if src.modality else None,
                    "frames_table": frames_table}], SOURCES)
                batches["sources"] = (SOURCES, _tables.write_rows(store, "sources", srow, SOURCES,
                                                                  head.tables.get("sources")))
        batches["quarantine"] = (QUARANTINE, _quarantine_rows(store, head, quarantined))
        if replaced:
            return _replace_tables(store, head, batches, replaced)
        return _tables.append_tables(store, head.tables, batches)

    if not landed and not _new_quarantine(store, _versions.head(store), quarantined):
        return IngestReport(None, 0, 0, quarantined, skipped, time.perf_counter() - t0)
    entry = _versions.commit(store, build, message or f"ingest {src.name}", summary)
    return IngestReport(entry.version, len(landed) - len(replaced), frames_added, quarantined, skipped,
                        time.perf_counter() - t0, episodes_replaced=sorted(replaced))


def _new_quarantine(store, head, quarantined) -> bool:
    keys = _existing(store, head, "quarantine", "key")
    return any(quarantine_key(*q) not in keys for q in quarantined)


def _quarantine_rows(store, head, quarantined) -> list:
    keys = _existing(store, head, "quarantine", "key")
    now = datetime.now(timezone.utc)
    rows = [{"key": quarantine_key(*q), "source": q[0], "item": q[1], "reason": q[2], "timestamp": now}
            for q in dict.fromkeys(quarantined) if quarantine_key(*q) not in keys]
    return _tables.write_rows(store, "quarantine", pa.Table.from_pylist(rows, QUARANTINE), QUARANTINE,
                              head.tables.get("quarantine")) if rows else []


def _quarantine_only(store, name, bad, message, t0) -> IngestReport:
    quarantined = [(name, item, reason) for item, reason in bad]
    if not _new_quarantine(store, _versions.head(store), quarantined):
        return IngestReport(None, 0, 0, quarantined, 0, time.perf_counter() - t0)

    def build(head):
        return _tables.append_tables(store, head.tables,
                                     {"quarantine": (QUARANTINE, _quarantine_rows(store, head, quarantined))})

    entry = _versions.commit(store, build, message or f"quarantine {name}", {"source": name, "quarantined": len(bad)})
    return IngestReport(entry.version, 0, 0, quarantined, 0, time.perf_counter() - t0)
