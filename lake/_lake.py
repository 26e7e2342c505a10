"""The ``Lake`` handle: reads one lake version; a writable handle moves forward with its own commits.

Imports run one way: lake <- packers <- loaders <- training <- entry points (``lake.cli``, ``lake.demo``, the
server). The one exception is this facade: ``Lake.pack`` and ``Lake.stream`` import ``packers`` / ``loaders``
lazily, inside the method, so users get the whole workflow from ``import lake``. Nothing below the facade
imports it back: packers' and the decoder's Ray tasks are handed a read-only ``Lake`` by their driver rather
than importing this module. ``tests/test_imports.py`` holds the rule and lists these hooks by function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pyarrow as pa

from . import _stats, _versions
from ._store import Store, normalize_uri

_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Diff:
    """Episodes in ``b`` and not in ``a`` (added) and the reverse (removed), sorted ids; and the edits between:
    ``relabelled`` / ``moved`` {episode_id: [old, new]} task / split, ``changed`` {episode_id: [other columns]},
    ``features_added`` / ``features_removed`` ["table:feature"]."""

    a: int
    b: int
    episodes_added: list[str]
    episodes_removed: list[str]
    relabelled: dict = field(default_factory=dict)
    moved: dict = field(default_factory=dict)
    changed: dict = field(default_factory=dict)
    features_added: list = field(default_factory=list)
    features_removed: list = field(default_factory=list)


class ReadOnlyError(RuntimeError):
    """Writing through a handle made by ``checkout``."""


def open(uri, create: bool = True, storage_options: dict | None = None) -> "Lake":  # noqa: A001 - contract name
    """Open (or create) the lake at ``uri``: a local folder or ``s3://bucket/prefix``.

    Raises FileNotFoundError when there is no lake and ``create`` is False.
    """
    store = Store(normalize_uri(uri), dict(storage_options) if storage_options else None)
    if not store.exists(_versions.LOG):
        if not create:
            raise FileNotFoundError(f"no lake at {store.uri} (create=True makes one)")
        _versions.create(store)
    return Lake(store, _versions.head(store))


class Lake:
    def __init__(self, store: Store, entry: _versions.LogEntry, read_only: bool = False):
        self._store, self._entry, self._read_only = store, entry, read_only
        self._index: tuple[int, dict] | None = None  # (version, episode_id -> row): lookups without a scan each
        self._datasets: dict[tuple[str, int], object] = {}  # opened Lance datasets at pinned versions
        self._video_index: tuple[int, dict] | None = None  # (version, (episode, camera) -> video row sans blob)
        self._frame_rows: dict[tuple[str, int], tuple[dict, np.ndarray]] = {}  # see _rows_of

    def __getstate__(self):  # opened datasets stay behind (Lance handles are per process)
        return {**self.__dict__, "_datasets": {}, "_index": None, "_video_index": None, "_frame_rows": {}}

    def __repr__(self) -> str:
        return f"Lake({self.uri!r}, version={self.version}{', read-only' if self._read_only else ''})"

    @property
    def uri(self) -> str:
        return self._store.uri

    @property
    def version(self) -> int:
        return self._entry.version

    @property
    def entry(self) -> _versions.LogEntry:
        """The log entry of the version this handle reads (its pins, commit time, writer)."""
        return self._entry

    @property
    def storage_options(self) -> dict | None:
        return self._store.storage_options

    @property
    def store(self) -> Store:
        return self._store

    def table(self, name: str):
        """The Lance dataset ``name`` at the version this handle pins (KeyError if absent)."""
        if name not in self._entry.tables:
            raise KeyError(f"table {name!r} is not in lake version {self.version} (has: {sorted(self._entry.tables)})")
        key = (name, self._entry.tables[name])
        if key not in self._datasets:
            self._datasets[key] = self._store.dataset(name, version=key[1])
        return self._datasets[key]

    def refresh(self) -> "Lake":
        """Move a writable handle to the newest version."""
        if not self._read_only:
            self._entry = _versions.head(self._store)
        return self

    # --- writing ------------------------------------------------------------------------------------------

    def _writable(self):
        if self._read_only:
            raise ReadOnlyError(f"lake handle at version {self.version} is read-only (made by checkout)")

    def ingest(self, src, split_ratios: dict[str, float] | None = None, message: str | None = None, *,
               source_name: str | None = None, source_storage_options: dict | None = None,
               ray_address: str | None = None, progress: bool = True, verify_all: bool = False):
        """Ingest a LeRobot v2.x/v3.0 folder as one lake version (a Ray Data job). Returns an IngestReport.

        Episodes whose metadata and file sizes/mtimes match what an earlier ingest recorded are not read again;
        ``verify_all`` reads, cuts and compares every episode (by content hash) instead."""
        import os

        from ._ingest import ingest

        self._writable()
        src = os.fspath(src)
        src = src if "://" in src else normalize_uri(src)
        rep = ingest(self._store, src, split_ratios=split_ratios, message=message, source_name=source_name,
                     storage_options=source_storage_options, ray_address=ray_address, progress=progress,
                     verify_all=verify_all)
        self.refresh()
        return rep

    def append_episodes(self, episodes, *, source: str, fps: float, robot_type: str = "unknown",
                        split_ratios: dict[str, float] | None = None, split: str | None = None,
                        message: str | None = None, extra: dict | None = None):
        """Append in-memory episodes (``lake.NewEpisode``: RL rollouts, evaluations) as one lake version."""
        from ._append import append_episodes

        self._writable()
        rep = append_episodes(self._store, list(episodes), source=source, fps=fps, robot_type=robot_type,
                              split_ratios=split_ratios, split=split, message=message, extra=extra)
        self.refresh()
        return rep

    def compact(self, min_fragments: int = 8, message: str | None = None):
        """Merge small fragments of every table (a lake version with the same data); None if nothing to do."""
        from ._append import compact

        self._writable()
        entry = compact(self._store, min_fragments=min_fragments, message=message)
        self.refresh()
        return entry

    def tag(self, name: str, version: int | None = None) -> None:
        """Name lake ``version`` (default: this handle's). Raises ValueError if the tag exists."""
        self._writable()
        if not name or not _ID.match(name) or name.isdigit():
            raise ValueError(f"tag names are letters, digits, '_', '-', '.', and not all digits: {name!r}")
        _versions.create_tag(self._store, name, self.version if version is None else int(version))

    # --- curation: each edit one zero-copy lake version (see lake._edit) --------------------------------------

    def _edited(self, rep):
        self.refresh()
        return rep

    def delete_episodes(self, ids=None, filter: str | None = None, message: str | None = None, dry_run: bool = False):
        """Delete episodes (by id and/or SQL ``filter``) from every table holding them, as Lance deletion vectors:
        nothing rewritten, older versions keep them. Returns an EditReport; NoChange if nothing matches."""
        from ._edit import delete_episodes

        self._writable()
        return self._edited(delete_episodes(self._store, ids, filter, message, dry_run))

    def update_episodes(self, filter: str | None, values: dict, ids=None, message: str | None = None,
                        dry_run: bool = False):
        """Set episode-level columns (``task``, ``split``, ``success``, a column add_feature made, ...) of the
        episodes matching ``filter`` (and/or ``ids``); the tasks table follows. ValueError for an unknown column
        or a value of the wrong type; NoChange when nothing would change."""
        from ._edit import update_episodes

        self._writable()
        return self._edited(update_episodes(self._store, filter, values, ids, message, dry_run))

    def resplit(self, spec: dict, seed: int = 0, message: str | None = None, dry_run: bool = False):
        """Re-split: ``{split: ratio}`` (deterministic in ``seed``) or ``{split: SQL filter}``."""
        from ._edit import resplit

        self._writable()
        return self._edited(resplit(self._store, spec, seed, message, dry_run))

    def add_feature(self, name: str, values, level: str = "frame", message: str | None = None,
                    dry_run: bool = False, ray_address: str | None = None):
        """A new column by Lance column addition (existing columns untouched): ``values`` is {episode_id: value
        (or per-frame array)} or a function of an episode's frames (a Ray Data job at frame level)."""
        from ._features import add_feature

        self._writable()
        # the module gets read handles from here: it does not import this facade (no import circle)
        return self._edited(add_feature(self._store, name, values, level, message, dry_run, ray_address,
                                        reader=lambda entry: Lake(self._store, entry, read_only=True)))

    def remove_feature(self, name: str, message: str | None = None, dry_run: bool = False):
        """Hide a feature from the new version (Lance drop_columns: metadata only; older versions keep it)."""
        from ._features import remove_feature

        self._writable()
        return self._edited(remove_feature(self._store, name, message, dry_run))

    def merge(self, other, filter: str | None = None, message: str | None = None, dry_run: bool = False,
              storage_options: dict | None = None):
        """Bring in the episodes of another lake (a Lake or a URI) this one lacks, by content identity; video
        packets copied as stored."""
        from ._merge import merge

        self._writable()
        if not isinstance(other, Lake):
            other = open(other, create=False, storage_options=storage_options)
        return self._edited(merge(self._store, other, filter, message, dry_run))

    def restore(self, version_or_tag, message: str | None = None, dry_run: bool = False):
        """Make an old version's content the newest version (history kept)."""
        from ._edit import restore

        self._writable()
        return self._edited(restore(self._store, version_or_tag, message, dry_run))

    # --- versions -----------------------------------------------------------------------------------------

    def log(self) -> list[_versions.LogEntry]:
        """Lake versions, newest first, each with its tags."""
        by_version: dict[int, list[str]] = {}
        for name, v in _versions.tags(self._store).items():
            by_version.setdefault(v, []).append(name)
        entries = _versions.chain(self._store)
        return [
            _versions.LogEntry(e.version, e.timestamp, e.message, e.tables, e.summary,
                               tuple(sorted(by_version.get(e.version, ()))), e.writer, e.data_deleted)
            for e in reversed(entries)
        ]

    def checkout(self, version_or_tag) -> "Lake":
        """A read-only handle at a lake version number or tag. Raises KeyError for an unknown one, and
        ``VersionDeleted`` (a KeyError naming the retained versions) for one whose data ``gc`` deleted."""
        return Lake(self._store, _versions.resolve(self._store, version_or_tag), read_only=True)

    def describe(self, version_or_tag) -> _versions.LogEntry:
        """The log entry of a lake version or tag, also after ``gc`` deleted its data (``.data_deleted``):
        what a checkpoint's lineage names stays answerable."""
        if isinstance(version_or_tag, str) and not version_or_tag.lstrip("-").isdigit():
            t = _versions.tags(self._store)
            if version_or_tag not in t:
                raise KeyError(f"no tag {version_or_tag!r} (tags: {sorted(t)})")
            version_or_tag = t[version_or_tag]
        e = _versions.entry(self._store, int(version_or_tag))
        tags = tuple(sorted(n for n, v in _versions.tags(self._store).items() if v == e.version))
        return _versions.LogEntry(e.version, e.timestamp, e.message, e.tables, e.summary, tags, e.writer,
                                  e.version in _versions.deleted_versions(self._store))

    def gc(self, keep_last: int = 10, keep_within=None, dry_run: bool = False):
        """Delete the data of versions nobody keeps: tagged versions, the newest ``keep_last`` and those newer
        than ``keep_within`` (a timedelta or "7d", "12h", ...) stay. Returns a GcReport (``.deleted_versions``,
        ``.bytes_freed``); ``dry_run`` deletes nothing. See ``lake._gc``."""
        from ._gc import gc

        self._writable()
        rep = gc(self._store, keep_last=keep_last, keep_within=keep_within, dry_run=dry_run)
        self._datasets.clear()
        return rep

    def _ids_at(self, version_or_tag) -> set[str]:
        entry = _versions.resolve(self._store, version_or_tag)
        if "episodes" not in entry.tables:
            return set()
        ds = self._store.dataset("episodes", version=entry.tables["episodes"])
        return set(ds.to_table(columns=["episode_id"])["episode_id"].to_pylist())

    def diff(self, a, b) -> Diff:
        """Episodes added and removed going from lake version (or tag) ``a`` to ``b``."""
        ea, eb = _versions.resolve(self._store, a), _versions.resolve(self._store, b)
        from ._edit import diff_details

        ia, ib = self._ids_at(ea.version), self._ids_at(eb.version)
        return Diff(ea.version, eb.version, sorted(ib - ia), sorted(ia - ib), **diff_details(self._store, ea, eb))

    # --- reading ------------------------------------------------------------------------------------------

    def _scan(self, name: str, filter: str | None = None, columns=None) -> pa.Table:
        if name not in self._entry.tables:
            from ._schema import EPISODES, QUARANTINE, SOURCES, TASKS

            empty = {"episodes": EPISODES, "quarantine": QUARANTINE, "tasks": TASKS, "sources": SOURCES}
            schema = empty.get(name, pa.schema([]))
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return self.table(name).to_table(filter=filter, columns=columns)

    def episodes(self, split: str | None = None, filter: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """One row per episode; ``filter`` is a SQL predicate pushed down to Lance (e.g. "length > 50")."""
        from ._schema import EPISODES

        preds = [f"({filter})"] if filter else []
        if split is not None:
            preds.append(f"split = '{_quote(split)}'")
        cols = columns or [n for n in EPISODES.names if n not in ("stats", "sketch", "stats_lerobot")]
        if "episodes" in self._entry.tables:  # lakes written before a column existed; columns add_feature added
            names = self.table("episodes").schema.names
            cols = [c for c in cols if c in set(names)] + ([n for n in names if n not in set(EPISODES.names)]
                                                           if columns is None else [])
        return self._scan("episodes", " AND ".join(preds) or None, cols)

    def _episode(self, episode_id: str) -> dict:
        if not isinstance(episode_id, str) or not _ID.match(episode_id):
            raise KeyError(f"not an episode id: {episode_id!r}")
        if self._index is None or self._index[0] != self.version:  # the pinned version cannot change under us
            rows = self._scan("episodes", None, ["episode_id", "frames_table", "cameras", "length", "fps"]).to_pylist()
            self._index = (self.version, {r["episode_id"]: r for r in rows})
        row = self._index[1].get(episode_id)
        if row is None:
            raise KeyError(f"no episode {episode_id!r} in lake version {self.version}")
        return row

    def frames(self, episode_id: str, columns: list[str] | None = None) -> pa.Table:
        """One row per frame of the episode, features under their source names, in frame order."""
        ep = self._episode(episode_id)
        cols = None if columns is None else list(dict.fromkeys(["frame_index", *columns]))
        from ._schema import unnest

        ds = self.table(ep["frames_table"])
        addrs = self._rows_of(ep["frames_table"], episode_id)
        # by address, not fragment offset: addresses stay right when rows before them are deleted
        t = unnest(ds._take_rows(addrs.tolist(), columns=cols) if len(addrs) else
                   ds.to_table(columns=cols, limit=0))
        if "frame_index" in t.column_names:
            t = t.sort_by("frame_index")
        return t.select(columns) if columns is not None else t

    def _rows_of(self, table: str, episode_id: str) -> np.ndarray:
        """Row addresses (fragment << 32 | offset) of an episode's frames in the pinned ``table``. The first call
        per table version reads the ``episode_id`` column once (with row addresses); every later call is a dict
        lookup, so reading episodes one by one costs a take each, not a scan each."""
        key = (table, self._entry.tables[table])
        if key not in self._frame_rows:
            t = self.table(table).to_table(columns=["episode_id"], with_row_address=True)
            codes = t.column("episode_id").combine_chunks().dictionary_encode()
            idx = codes.indices.to_numpy(zero_copy_only=False)
            order = np.argsort(idx, kind="stable")
            addr = t.column("_rowaddr").to_numpy().astype(np.uint64)[order]
            bounds = np.searchsorted(idx[order], np.arange(len(codes.dictionary) + 1))
            spans = {e: (int(bounds[i]), int(bounds[i + 1])) for i, e in enumerate(codes.dictionary.to_pylist())}
            self._frame_rows[key] = (spans, addr)
        spans, addr = self._frame_rows[key]
        a, b = spans.get(episode_id, (0, 0))
        return addr[a:b]

    def _video_meta(self, episode_id: str, camera: str) -> dict:
        """The videos row of (episode, camera) without its blob, plus ``_rowid``; from a per-version map built by
        one scan of the non-blob columns (no filtered scan per call)."""
        ep = self._episode(episode_id)
        if camera not in (ep["cameras"] or []):
            raise KeyError(f"episode {episode_id} has no camera {camera!r} (has: {ep['cameras']})")
        index = self._video_index
        if index is None or index[0] != self.version:  # the pinned version cannot change under us
            ds = self.table("videos")
            t = ds.to_table(columns=[n for n in ds.schema.names if n != "data"], with_row_id=True)
            lists = {}
            for name, dtype in (("packet_offsets", np.int64), ("packet_pts", np.int64), ("packet_key", bool)):
                col = t.column(name).combine_chunks()
                values = col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
                offs = col.offsets.to_numpy() - col.offsets[0].as_py()
                lists[name] = [values[offs[i]:offs[i + 1]] for i in range(len(col))]
            rows = t.drop_columns(list(lists)).to_pylist()
            for i, r in enumerate(rows):
                r.update({name: v[i] for name, v in lists.items()})
            index = (self.version, {(r["episode_id"], r["camera"]): r for r in rows})
            self._video_index = index
        meta = index[1].get((episode_id, camera))
        if meta is None:
            raise KeyError(f"episode {episode_id} has no video for camera {camera!r}")
        return meta

    def video(self, episode_id: str, camera: str, frames=None) -> np.ndarray:
        """Decoded frames of one camera, uint8 (T, H, W, 3) RGB, T = episode length.

        ``frames`` (episode-relative indices, any order, repeats allowed, negatives count from the end) decodes
        only the GOPs holding those frames, reading only their bytes: uint8 (len(frames), H, W, 3), equal to
        ``video(episode_id, camera)[frames]``. IndexError for indices outside the episode.
        """
        reader = self.video_reader(episode_id, camera)
        return reader.all() if frames is None else reader.frames(frames)

    def video_reader(self, episode_id: str, camera: str):
        """A ``VideoReader`` of one camera of one episode: open once, decode frames many times (``.frames(idx)``,
        ``.all()``), as ``video`` does. KeyError for an unknown episode or camera."""
        return self.video_readers(episode_id, [camera])[camera]

    def video_readers(self, episode_id: str, cameras=None) -> dict:
        """``{camera: VideoReader}`` for ``cameras`` (default: all) of one episode, opened with one Lance blob
        lookup (as cheap as one camera's)."""
        from ._video import Segment, VideoReader

        cameras = list(self._episode(episode_id)["cameras"] or []) if cameras is None else list(cameras)
        metas = [self._video_meta(episode_id, c) for c in cameras]
        blobs = self.table("videos").take_blobs("data", ids=[m["_rowid"] for m in metas]) if metas else []
        out = {}
        for camera, meta, blob in zip(cameras, metas, blobs):
            seg = Segment(meta["codec"], meta["extradata"], meta["width"], meta["height"], meta["pix_fmt"],
                          Fraction(meta["time_base_num"], meta["time_base_den"]), b"", meta["packet_offsets"],
                          meta["packet_pts"], meta["packet_key"], meta["skip"], meta["frames"])
            out[camera] = VideoReader(episode_id, camera, seg, blob)
        return out

    def stats(self, split: str | None = None, filter: str | None = None, method: str = "lake",
              by: str | None = None) -> dict:
        """{feature: {"count","mean","std","min","max","q01","q10","q50","q90","q99": arrays}} over the chosen
        episodes (cameras per channel in [0, 1], shape (3, 1, 1)), LeRobot's keys and shapes.

        ``method``: "lake" (default; exact moments over every frame, quantiles from mergeable sketches) or
        "lerobot" (LeRobot 0.4.4's numbers: its frame sample for cameras, per-episode histogram quantiles, its
        ``aggregate_stats``); see ``lake._stats``. ``by``: "episode", "embodiment" (= "robot_type"), "source" or
        another episodes column: ``{value: stats}`` per group instead. Raises ValueError for an unknown method."""
        col = {"episode": "episode_id", "embodiment": "robot_type"}.get(by, by)
        t = self.episodes(split=split, filter=filter,
                          columns=["stats", "sketch", "stats_lerobot"] + ([col] if col else []))
        if col:
            if col not in t.column_names:
                raise ValueError(f"stats by {by!r}: the episodes table has no column {col!r}")
            return _stats.grouped(t, col, method)
        pick = lambda n: t[n] if n in t.column_names else None  # noqa: E731
        return _stats.aggregate_columns(t["stats"], pick("sketch"), pick("stats_lerobot"), method)

    def verify(self, version=None, deep: bool = False, progress: bool = True):
        """Recompute the checksums of what lake ``version`` (default: this handle's) holds; ``deep`` also decodes
        every video segment strictly. Returns a VerifyReport: ``.ok``, ``.mismatches`` (table, episode, camera,
        reason). See ``lake._verify``."""
        from ._verify import verify

        return verify(self if version is None else self.checkout(version), deep=deep, progress=progress)

    def features(self) -> dict:
        """LeRobot ``features`` of every ingested source, by source name (as in its info.json)."""
        import json

        return {r["source"]: json.loads(r["info_json"])["features"] for r in self._scan("sources").to_pylist()}

    def export(self, dest, version=None, split: str | None = None, filter: str | None = None,
               format: str = "lerobot-v3.0", **kw):
        """Write lake ``version`` (default: this handle's), one ``split`` and/or episodes matching ``filter``, as a
        LeRobot dataset folder ("lerobot-v3.0" or "lerobot-v2.1"), videos copied without re-encoding. Returns an
        ExportReport; see ``lake._export``."""
        from ._export import export

        return export(self, dest, version=version, split=split, filter=filter, format=format, **kw)

    def embodiments(self) -> dict:
        """{source: Embodiment}: each source's robot type and named state/action slices, from its GR00T
        ``meta/modality.json``, or the default layout (``default_layout``) without one; see ``lake._embodiment``."""
        import json

        from ._embodiment import embodiment

        out = {}
        for r in self._scan("sources").to_pylist():
            out[r["source"]] = embodiment(json.loads(r["info_json"]),
                                          json.loads(r["modality_json"]) if r["modality_json"] else None)
        return out

    # --- training data (packers / loaders) ------------------------------------------------------------------

    def pack(self, recipe=None, **kw):
        """Decode, tokenize and bin-pack every split into a packed table (a Ray Data job); see ``packers``."""
        from packers import pack

        self._writable()
        rep = pack(self, recipe, **kw)
        self.refresh()
        return rep

    def decode_videos(self, cameras=None, **kw):
        """Decode every frame of ``cameras`` (default: all) once into the table ``decoded_frames`` (a Ray Data job,
        one lake version), for readers that take single frames at random (``LeRobotStyleDataset``). Only videos
        not decoded yet are decoded. Returns a DecodeReport; see ``lake._decoded``."""
        from ._decoded import decode_videos

        self._writable()
        rep = decode_videos(self, cameras, **kw)
        self.refresh()
        return rep

    def stream(self, split: str, recipe=None, **opts):
        """Iterate PackedBatch from the packed table of ``recipe`` (default: the newest); see ``loaders``."""
        from loaders import stream

        return stream(self, split, recipe=recipe, **opts)

    def serve(self, host: str = "127.0.0.1", port: int = 8470) -> None:
        """Serve a read-only browser view of this lake at http://host:port until interrupted (``lakeview``)."""
        from lakeview import serve  # the facade's lazy hook to an entry point, as for packers / loaders

        serve(self, host=host, port=port)

    def quarantine(self) -> pa.Table:
        """What did not land: source, item (file / episode), reason, when."""
        return self._scan("quarantine", columns=["source", "item", "reason", "timestamp"])


def _quote(s: str) -> str:
    return str(s).replace("'", "''")
