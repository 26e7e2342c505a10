"""Arrow schemas of the lake's tables, documented once here.

- ``episodes``: one row per episode. ``episode_id`` is content-derived and stable; ``stats`` holds the
  episode's per-feature stats (LeRobot's names: count/mean/std/min/max plus q01/q99, over every frame), flattened;
  ``stats_lerobot`` the same episode's stats as LeRobot 0.4.4 computes them (``lake._lerobot_stats``).
- ``frames_<sig>``: one row per timestep, every LeRobot feature under its source name. Episodes whose sources
  share a feature layout share a table; ``sig`` is a hash of that layout (``frames_table`` in ``episodes``).
- ``videos``: one row per (episode, camera): the GOP-aligned elementary stream as a Lance blob + packet index.
- ``tasks``: task strings with stable ids. ``sources``: each ingested folder's info.json / modality.json.
- ``quarantine``: what did not land, with the reason.

Every stored unit carries a checksum written with it (``lake._checksum``), in its episode's row:
``video_checksums`` per camera's packet segment, ``frames_checksum`` over the episode's frame rows, and
``content_hash`` over the id and the segments.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from ._sketch import SKETCH_TYPE

STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")

STATS_TYPE = pa.list_(pa.struct(
    [pa.field("feature", pa.string()), pa.field("count", pa.int64()), pa.field("shape", pa.list_(pa.int32()))]
    + [pa.field(s, pa.list_(pa.float64())) for s in STAT_NAMES]
))

# LeRobot 0.4.4's per-episode stats (``lake._lerobot_stats``): its sampling, scaling and histogram quantiles;
# ``dtype`` is what mean/std were computed in (float32 features stay float32), values stored exactly as float64
LEROBOT_STAT_NAMES = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")
LEROBOT_STATS_TYPE = pa.list_(pa.struct(
    [pa.field("feature", pa.string()), pa.field("count", pa.int64()), pa.field("shape", pa.list_(pa.int32())),
     pa.field("dtype", pa.string())]
    + [pa.field(s, pa.list_(pa.float64())) for s in LEROBOT_STAT_NAMES]
))

EPISODES = pa.schema([
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("source_uri", pa.string()),
    pa.field("source_episode_index", pa.int64()),
    pa.field("task", pa.string()),
    pa.field("tasks", pa.list_(pa.string())),
    pa.field("length", pa.int64()),
    pa.field("split", pa.string()),
    pa.field("robot_type", pa.string()),
    pa.field("fps", pa.float64()),
    pa.field("frames_table", pa.string()),
    pa.field("cameras", pa.list_(pa.string())),
    pa.field("codebase_version", pa.string()),
    pa.field("stats", STATS_TYPE),
    # episodes produced by a policy (RL rollouts, evaluations); null for recorded datasets
    pa.field("policy_version", pa.int64()),
    pa.field("episode_return", pa.float64()),
    pa.field("success", pa.bool_()),
    pa.field("attrs", pa.string()),  # JSON: anything else the producer wants to keep (checkpoint, env id, ...)
    # mergeable per-feature quantile sketches (``_sketch``): lake-wide q01/q99 without reading frames
    pa.field("sketch", SKETCH_TYPE),
    # integrity (see lake._checksum); null in rows written before these columns existed
    pa.field("frames_checksum", pa.string()),  # the episode's frame rows
    pa.field("content_hash", pa.string()),  # id + every camera's segment checksum: what re-ingest compares
    pa.field("source_fingerprint", pa.string()),  # source metadata + file sizes/mtimes: cheap re-ingest check
    # each camera's packet segment (lake._checksum.segment_checksum). Kept here, not in ``videos``: a column
    # added after that table's blob column reads back null in this Lance (field ids shift past the blob)
    pa.field("video_checksums", pa.list_(pa.struct([("camera", pa.string()), ("checksum", pa.string())]))),
    # LeRobot's own per-episode stats (q10/q50/q90 too; images from its frame sample): null in older rows.
    # A column of its own: the ``stats`` struct cannot gain fields in place
    pa.field("stats_lerobot", LEROBOT_STATS_TYPE),
])

VIDEOS = pa.schema([
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("camera", pa.string()),
    pa.field("codec", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("pix_fmt", pa.string()),
    pa.field("time_base_num", pa.int64()),
    pa.field("time_base_den", pa.int64()),
    pa.field("extradata", pa.binary()),
    pa.field("packet_offsets", pa.list_(pa.int64())),
    pa.field("packet_pts", pa.list_(pa.int64())),
    pa.field("packet_key", pa.list_(pa.bool_())),
    pa.field("skip", pa.int32()),  # decoded frames before the episode's first frame
    pa.field("frames", pa.int32()),
    pa.field("from_timestamp", pa.float64()),
    pa.field("source_file", pa.string()),
    pa.field("data", pa.large_binary(), metadata={"lance-encoding:blob": "true"}),
])

TASKS = pa.schema([pa.field("task_id", pa.string()), pa.field("task", pa.string())])

SOURCES = pa.schema([
    pa.field("source", pa.string()),
    pa.field("source_uri", pa.string()),
    pa.field("codebase_version", pa.string()),
    pa.field("info_json", pa.string()),
    pa.field("modality_json", pa.string()),
    pa.field("frames_table", pa.string()),
])

QUARANTINE = pa.schema([
    pa.field("key", pa.string()),
    pa.field("source", pa.string()),
    pa.field("item", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
])


def frames_schema(fields: list[pa.Field]) -> pa.Schema:
    """Stored frame schema: episode_id + the features, dotted names nested (see ``nest_fields``)."""
    return pa.schema([pa.field("episode_id", pa.string(), nullable=False), *nest_fields(fields)])


def frames_table_name(schema: pa.Schema) -> str:
    sig = json.dumps([(f.name, str(f.type)) for f in schema], sort_keys=False)
    return "frames_" + hashlib.sha256(sig.encode()).hexdigest()[:10]


def task_id(task: str) -> str:
    return "task_" + hashlib.sha256(task.encode()).hexdigest()[:12]


def quarantine_key(source: str, item: str, reason: str) -> str:
    return hashlib.sha256(f"{source}\0{item}\0{reason}".encode()).hexdigest()[:24]


# --- dotted LeRobot names <-> nested structs --------------------------------------------------------------
# Lance forbids '.' in top-level names; "observation.state" is stored as struct "observation" with child
# "state", which Lance projects and filters natively. Image features are structs too ({bytes, path}): a
# struct with exactly those children is a value, any other struct is a namespace.

def _is_value_struct(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and [f.name for f in t] == ["bytes", "path"]


def nest_fields(fields: list[pa.Field]) -> list[pa.Field]:
    groups: dict[str, list[pa.Field] | pa.Field] = {}
    for f in fields:
        head, _, rest = f.name.partition(".")
        if rest:
            if isinstance(groups.get(head), pa.Field):
                raise ValueError(f"feature {head!r} is both a value and a prefix of {f.name!r}")
            groups.setdefault(head, []).append(f.with_name(rest))
        else:
            if head in groups:
                raise ValueError(f"feature {head!r} is both a value and a prefix")
            groups[head] = f
    return [pa.field(n, pa.struct(nest_fields(g))) if isinstance(g, list) else g for n, g in groups.items()]


def nest(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A flat table with dotted names -> the nested ``schema`` (from ``nest_fields``)."""

    def build(fields, prefix: str):
        out = []
        for f in fields:
            if pa.types.is_struct(f.type) and not _is_value_struct(f.type):
                children = build(list(f.type), prefix + f.name + ".")
                out.append(pa.StructArray.from_arrays(children, fields=list(f.type)))
            else:
                out.append(table[prefix + f.name].combine_chunks())
        return out

    return pa.Table.from_arrays(build(list(schema), ""), schema=schema)


def unnest(table: pa.Table) -> pa.Table:
    """Nested namespace structs -> flat columns with dotted names (LeRobot's)."""
    names, cols = [], []

    def walk(name: str, col: pa.ChunkedArray):
        if pa.types.is_struct(col.type) and not _is_value_struct(col.type):
            for child, arr in zip(col.type, col.flatten()):
                walk(f"{name}.{child.name}", arr)
        else:
            names.append(name)
            cols.append(col)

    for name, col in zip(table.column_names, table.columns):
        walk(name, col)
    return pa.table(cols, names=names)
