"""Side files: small files the lake derives from one Lance version of one table, kept inside the table's folder.

``<table>.lance/_lake/<kind>-v<lance version>.<ext>`` (e.g. the packer's pack index, ``packers.pack_index``).
Inside the table's folder so that they live and die with it: Lance's own cleanup touches only its folders
(``_versions``, ``data``, ``_deletions``, ``_indices``, ``_transactions``), and gc removing a whole table removes
its folder. gc deletes the side files of the Lance versions it deletes (``stale``). A side file is derived data:
a reader verifies it against the version it reads and falls back to the table when it is absent or does not
check out, so losing one costs time, never correctness.
"""

from __future__ import annotations

import re

FOLDER = "_lake"
_NAME = re.compile(r"(?P<kind>[a-z0-9-]+)-v(?P<version>[0-9]+)\.[a-z]+")


def path(table_uri: str, kind: str, version: int, ext: str = "lance") -> str:
    """Where the ``kind`` side file of Lance version ``version`` of the table at ``table_uri`` lives."""
    return f"{table_uri.rstrip('/')}/{FOLDER}/{kind}-v{int(version)}.{ext}"


def stale(fs, table_path: str, keep: set[int], below: int) -> list[str]:
    """Side files under ``table_path`` (an fsspec path) of Lance versions gc deletes: not in ``keep`` and below
    ``below`` (the rule gc applies to the table's own versions; a version above may be a writer's work)."""
    folder = f"{table_path.rstrip('/')}/{FOLDER}"
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    out = []
    for p in names:
        m = _NAME.fullmatch(p.rstrip("/").rsplit("/", 1)[-1])
        if m and int(m["version"]) not in keep and int(m["version"]) < below:
            out.append(p)
    return out
