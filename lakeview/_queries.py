"""What the pages show, read from a ``Lake`` handle: plain dicts and lists, no markup.

Reads go through the public Lake API (``log``, ``checkout``, ``diff``, ``episodes``, ``frames``, ``stats``,
``quarantine``) and ``Lake.table(name)`` where a page needs a scan the API does not offer (a page of episodes
with Lance's filter + order + offset/limit; the packed tables; the ``packings`` / ``evals`` rows).
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pyarrow as pa

# columns of the episodes table shown and sortable in the episodes list (others may exist; these are the contract's)
LIST_COLUMNS = ("episode_id", "source", "source_episode_index", "task", "length", "split", "robot_type")
SORTABLE = LIST_COLUMNS + ("fps", "policy_version", "episode_return", "success")
MAX_FILTER = 2000
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_TAG_OR_VERSION = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_LANCE_TRAILER = re.compile(r",\s*/\S+\.rs:\d+:\d+\s*$")  # Lance appends the Rust source location


class BadRequest(ValueError):
    """Input from the URL that cannot be served (shown as a 4xx page with this message)."""


class NotFound(KeyError):
    """An id, version or table that the lake does not hold (a 404 page with this message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def check_id(text: str, what: str = "episode id") -> str:
    if not isinstance(text, str) or not _ID.match(text):
        raise BadRequest(f"not a valid {what}: {text[:80]!r} (letters, digits, '_', '-', '.')")
    return text


def check_version(text: str) -> int | str:
    """A lake version number or tag from the URL."""
    if not isinstance(text, str) or not _TAG_OR_VERSION.match(text):
        raise BadRequest(f"not a lake version or tag: {str(text)[:80]!r}")
    return int(text) if text.isdigit() else text


def check_filter(text: str | None) -> str | None:
    """A filter box value: one SQL predicate for Lance's parser. Statement separators and comments outside string
    literals are refused here (Lance would ignore what follows a ';', which would mislead the reader)."""
    text = (text or "").strip()
    if not text:
        return None
    if len(text) > MAX_FILTER:
        raise BadRequest(f"filter is longer than {MAX_FILTER} characters")
    if "\x00" in text:
        raise BadRequest("filter contains a NUL character")
    bare = re.sub(r"'(?:[^']|'')*'", "_", text)  # string literals out
    if "'" in bare:
        raise BadRequest("filter has an unterminated string literal")
    for bad, why in ((";", "';' (one predicate only)"), ("--", "'--' (no comments)"), ("/*", "'/*' (no comments)")):
        if bad in bare:
            raise BadRequest(f"filter contains {why}")
    return text


def lance_message(e: Exception) -> str:
    """Lance's error text without the Rust source location, first line only."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return _LANCE_TRAILER.sub("", msg)[:400]


def _quote(s: str) -> str:
    return str(s).replace("'", "''")


# --- versions ------------------------------------------------------------------------------------------------

class Sizes:
    """Rows and bytes of a table at a Lance version; pinned versions never change, so each is read once."""

    def __init__(self, lk):
        self._lk = lk
        self._cache: dict[tuple[str, int], tuple[int, int] | None] = {}

    def __call__(self, name: str, lance_version: int) -> tuple[int, int] | None:
        key = (name, int(lance_version))
        if key not in self._cache:
            try:
                ds = self._lk.store.dataset(name, version=key[1])
                files = [f for fr in ds.get_fragments() for f in fr.metadata.files]
                self._cache[key] = (ds.count_rows(), sum(int(getattr(f, "file_size_bytes", 0) or 0) for f in files))
            except Exception:  # noqa: BLE001 - a version removed by gc: shown as unknown, not an error page
                self._cache[key] = None
        return self._cache[key]


def log_rows(lk, sizes: Sizes, offset: int = 0, limit: int = 50) -> tuple[list[dict], int]:
    """One page of the versions log, newest first, with episode counts and stored bytes per version."""
    log = lk.log()
    out = []
    for e in log[offset:offset + limit]:
        episodes = sizes("episodes", e.tables["episodes"]) if "episodes" in e.tables else (0, 0)
        parts = [sizes(n, v) for n, v in e.tables.items()]
        out.append({
            "version": e.version, "time": e.timestamp.strftime("%Y-%m-%d %H:%M:%S"), "message": e.message,
            "tags": list(e.tags), "summary": {k: v for k, v in e.summary.items() if not isinstance(v, (dict, list))},
            "episodes": episodes[0] if episodes else None,
            "bytes": None if any(p is None for p in parts) else sum(p[1] for p in parts),
            "tables": len(e.tables),
        })
    return out, len(log)


def _episode_meta(lk, columns=("episode_id", "source", "task", "split")) -> dict[str, dict]:
    t = lk.episodes(columns=list(columns))
    return {r["episode_id"]: r for r in t.to_pylist()}


def diff(lk, a, b) -> dict:
    """Episodes added, removed and changed (task or split relabelled) from version/tag ``a`` to ``b``, with counts
    per (source, task)."""
    try:
        la, lb = lk.checkout(a), lk.checkout(b)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise NotFound(str(e.args[0]) if e.args else f"no lake version {a} or {b}") from None
    d = lk.diff(la.version, lb.version)
    ma, mb = _episode_meta(la), _episode_meta(lb)
    changed = sorted(i for i in set(ma) & set(mb)
                     if (ma[i]["task"], ma[i]["split"]) != (mb[i]["task"], mb[i]["split"]))

    def groups(ids, meta):
        c = Counter((meta[i]["source"], meta[i]["task"]) for i in ids)
        return [{"source": s, "task": t, "count": n} for (s, t), n in sorted(c.items(), key=lambda x: -x[1])]

    return {"a": la.version, "b": lb.version,
            "added": [mb[i] for i in d.episodes_added], "removed": [ma[i] for i in d.episodes_removed],
            "changed": [{"episode_id": i, "before": ma[i], "after": mb[i]} for i in changed],
            "added_groups": groups(d.episodes_added, mb), "removed_groups": groups(d.episodes_removed, ma)}


# --- episodes ------------------------------------------------------------------------------------------------

def episodes_page(lk, filter: str | None, split: str | None, sort: str, desc: bool, offset: int,
                  limit: int) -> tuple[pa.Table, int]:
    """One page of episodes, in two reads: Lance filters and returns only the sort key, the id and the row id of
    the matching episodes (narrow columns); Arrow orders them; then only the page's rows are taken, by row id. So
    a page never materialises the other columns of every match (what ``lk.episodes(filter)`` and a slice would).
    Returns (rows, matching count). BadRequest for a filter Lance rejects."""
    import pyarrow.compute as pc

    if sort not in SORTABLE:
        raise BadRequest(f"cannot sort by {sort[:40]!r}; sortable: {', '.join(SORTABLE)}")
    preds = [f"({filter})"] if filter else []
    if split:
        preds.append(f"split = '{_quote(split)}'")
    where = " AND ".join(preds) or None
    try:
        ds = lk.table("episodes")
    except KeyError:
        return pa.table({c: pa.array([], pa.string()) for c in LIST_COLUMNS}), 0
    have = set(ds.schema.names)
    cols = [c for c in LIST_COLUMNS if c in have] + [c for c in ("success", "episode_return") if c in have]
    if sort not in have:
        raise BadRequest(f"this lake's episodes have no column {sort!r}")
    keys = list(dict.fromkeys([sort, "episode_id"]))  # episode_id breaks ties: a stable order across pages
    try:
        index = ds.to_table(columns=keys, filter=where, with_row_id=True)
    except (ValueError, OSError, RuntimeError, TypeError) as e:
        raise BadRequest(f"filter rejected: {lance_message(e)}") from None
    direction = "descending" if desc else "ascending"
    try:  # pyarrow >= 25 takes the null placement per key
        order = pc.sort_indices(index, sort_keys=[(sort, direction, "at_end"), ("episode_id", "ascending", "at_end")])
    except (TypeError, ValueError):
        order = pc.sort_indices(index, sort_keys=[(sort, direction), ("episode_id", "ascending")], null_placement="at_end")
    page = order[offset:offset + limit]
    row_ids = pc.take(index["_rowid"], page)
    # _take_rows: pylance's take by row id (pinned 14.0.2; the lake's blob reads use the same ids); rows come back
    # in the order asked
    rows = ds._take_rows(row_ids.to_pylist(), columns=cols) if len(page) else ds.schema.empty_table().select(cols)
    return rows, index.num_rows


def episode(lk, episode_id: str) -> dict:
    """Everything the episode page shows except video: the row, numeric per-frame features, quarantine notes."""
    check_id(episode_id)
    if not _has(lk, "episodes"):
        raise NotFound(f"no episode {episode_id!r} in lake version {lk.version}")
    ds = lk.table("episodes")
    t = ds.to_table(filter=f"episode_id = '{_quote(episode_id)}'", columns=[c for c in ds.schema.names if c != "stats"])
    if t.num_rows == 0:
        raise NotFound(f"no episode {episode_id!r} in lake version {lk.version}")
    row = t.to_pylist()[0]
    frames = lk.frames(episode_id)
    series = {}
    for name, col in zip(frames.column_names, frames.columns):
        if name in ("frame_index", "episode_index", "index", "task_index"):
            continue
        typ = col.type
        if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ):
            if not (pa.types.is_floating(typ.value_type) or pa.types.is_integer(typ.value_type)):
                continue
            arr = np.asarray(col.to_pylist(), np.float64)
        elif pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ):
            arr = np.asarray(col.to_pylist(), np.float64)
        else:
            continue
        series[name] = arr.reshape(len(arr), -1)
    attrs = {}
    if row.get("attrs"):
        try:
            attrs = json.loads(row["attrs"])
        except ValueError:
            attrs = {"attrs": row["attrs"]}
    idx = row.get("source_episode_index")
    quarantine = [q for q in lk.quarantine().to_pylist()
                  if q["source"] == row.get("source") and (q["item"].endswith(f"episode {idx}") or episode_id in q["item"])]
    checksums = {k: v for k, v in row.items() if "checksum" in k or "sha" in k or "crc" in k}
    return {"row": row, "series": series, "attrs": attrs, "quarantine": quarantine, "checksums": checksums,
            "length": frames.num_rows}


def _has(lk, name: str) -> bool:
    try:
        lk.table(name)
        return True
    except KeyError:
        return False


def video_checksums(lk, episode_id: str) -> dict[str, dict]:
    """Checksum-like columns of the videos rows of an episode, by camera (empty when the lake stores none)."""
    if not _has(lk, "videos"):
        return {}
    ds = lk.table("videos")
    cols = [n for n in ds.schema.names if any(k in n for k in ("checksum", "sha", "crc"))]
    if not cols:
        return {}
    t = ds.to_table(columns=["camera", *cols], filter=f"episode_id = '{_quote(episode_id)}'")
    return {r.pop("camera"): r for r in t.to_pylist()}


# --- stats ---------------------------------------------------------------------------------------------------

def splits(lk) -> list[str]:
    if not _has(lk, "episodes"):
        return []
    return sorted({s for s in lk.table("episodes").to_table(columns=["split"])["split"].to_pylist() if s})


def robot_types(lk) -> list[str]:
    if not _has(lk, "episodes"):
        return []
    return sorted({s for s in lk.table("episodes").to_table(columns=["robot_type"])["robot_type"].to_pylist() if s})


def stats(lk, split: str | None, robot_type: str | None, sample_episodes: int = 64) -> dict:
    """Stored per-feature stats (mean/std/min/max/q01/q99 per dimension) over the chosen episodes, and histograms of
    each numeric frame feature over a sample of up to ``sample_episodes`` of those episodes."""
    filt = f"robot_type = '{_quote(robot_type)}'" if robot_type else None
    st = lk.stats(split=split, filter=filt)
    eps = lk.episodes(split=split, filter=filt, columns=["episode_id", "frames_table"])
    ids = eps["episode_id"].to_pylist()
    chosen = [ids[i] for i in np.linspace(0, len(ids) - 1, min(sample_episodes, len(ids))).astype(int)] if ids else []
    hist: dict[str, np.ndarray] = {}
    by_table: dict[str, list[str]] = {}
    picked = set(chosen)
    for eid, tab in zip(eps["episode_id"].to_pylist(), eps["frames_table"].to_pylist()):
        if eid in picked:
            by_table.setdefault(tab, []).append(eid)
    heads = {name.split(".", 1)[0] for name in st}  # stored nested: "observation.state" is column "observation"
    for tab, tids in by_table.items():
        ds = lk.table(tab)
        numeric = [f.name for f in ds.schema if f.name in heads]
        inlist = ", ".join(f"'{_quote(i)}'" for i in tids)
        from lake._schema import unnest  # dotted names back, as lk.frames gives them

        t = unnest(ds.to_table(columns=numeric, filter=f"episode_id IN ({inlist})"))
        for name in st:
            if name in t.column_names:
                try:
                    arr = np.asarray(t[name].to_pylist(), np.float64)
                except (TypeError, ValueError):
                    continue
                arr = arr.reshape(len(arr), -1)
                hist[name] = np.concatenate([hist[name], arr]) if name in hist else arr
    out = []
    for name, s in st.items():
        dims = np.asarray(s["mean"]).ravel().size
        rows = [{k: float(np.asarray(s[k]).ravel()[d]) for k in ("mean", "std", "min", "max", "q01", "q99")}
                for d in range(min(dims, 32))]
        out.append({"feature": name, "count": int(np.asarray(s["count"]).ravel()[0]), "dims": dims, "rows": rows,
                    "sample": [hist[name][:, d] for d in range(min(hist[name].shape[1], 8))] if name in hist else None})
    return {"features": out, "episodes": len(ids), "sampled": len(chosen)}
