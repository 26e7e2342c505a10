"""Which packed table to read: the ``packings`` registry of a lake version, resolved to a ``PackedSource``.

The packer registers every packed table it writes as one row of the lake table ``packings``
(``packers.schema.PACKINGS``: recipe hash, the Lance table's name, the lake version it was packed from, ...).
A ``PackedSource`` pins the chosen table at the Lance version the lake version holds: a small value that
any process (DataLoader worker, Ray task) can open by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .retry import Backoff, retrying


class PackedTableNotFound(LookupError):
    """The lake version holds no packed table (for that recipe)."""


@dataclass(frozen=True)
class PackedSource:
    """One packed table, pinned: lake root + options, Lance table name and version, recipe hash, layout."""

    uri: str
    table: str
    lance_version: int
    lake_version: int
    recipe_hash: str
    layout: dict = field(default_factory=dict, hash=False, compare=False)
    storage_options: dict | None = field(default=None, hash=False, compare=False, repr=False)
    backoff: Backoff = field(default=Backoff(), compare=False)

    @property
    def table_uri(self) -> str:
        return f"{self.uri}/{self.table}.lance"

    def open(self):
        """The Lance dataset at the pinned version (retried on transient I/O errors)."""
        import lance

        return retrying(lambda: lance.dataset(self.table_uri, version=self.lance_version,
                                              storage_options=self.storage_options),
                        f"opening {self.table_uri}@{self.lance_version}", self.backoff)


def _recipe_hash(recipe) -> str | None:
    if recipe is None or isinstance(recipe, str):
        return recipe
    h = getattr(recipe, "hash", None)
    if not isinstance(h, str):
        raise TypeError(f"recipe must be None, a recipe hash (str) or an object with .hash, got {type(recipe).__name__}")
    return h


def resolve(lk, recipe=None, version=None, backoff: Backoff = Backoff()) -> PackedSource:
    """The packed table of ``recipe`` (a Recipe, its hash, or None = the newest) at ``version`` (default: ``lk``'s).

    Raises PackedTableNotFound when the lake version has no packed table, or none for that recipe.
    """
    return resolve_open(lk, recipe, version, backoff)[0]


def resolve_open(lk, recipe=None, version=None, backoff: Backoff = Backoff()):
    """``resolve``, and the Lance dataset it opened to pin the version (a stream reads through it rather than
    opening the table again: on an object store each open reads the manifest)."""
    if version is not None:
        lk = lk.checkout(version)
    want = _recipe_hash(recipe)
    try:
        registry = retrying(lambda: lk.table("packings").to_table(), f"reading packings of {lk.uri}", backoff)
    except KeyError:
        raise PackedTableNotFound(
            f"lake {lk.uri} at version {lk.version} has no packed table: run lk.pack() (or `lake pack`) first") from None
    rows = registry.to_pylist()
    if want is not None:
        exact = [r for r in rows if r["recipe_hash"] == want]
        rows = exact or [r for r in rows if r["recipe_hash"].startswith(want)]
        if len({r["recipe_hash"] for r in rows}) > 1:
            raise ValueError(f"recipe hash prefix {want!r} is ambiguous: {sorted({r['recipe_hash'] for r in rows})}")
        if not rows:
            have = sorted({r["recipe_hash"] for r in registry.to_pylist()})
            raise PackedTableNotFound(f"lake {lk.uri} at version {lk.version} has no packed table for recipe {want!r} "
                                      f"(packed recipes: {have}); run lk.pack(recipe) first")
    # newest = the last registered (rows are appended in commit order); `created` breaks nothing if equal
    order = np.lexsort((np.arange(len(rows)), [r["created"].timestamp() if r["created"] else 0 for r in rows]))
    row = rows[int(order[-1])]
    try:
        ds = retrying(lambda: lk.table(row["table"]), f"opening {row['table']}", backoff)
    except KeyError:
        raise PackedTableNotFound(f"packings names table {row['table']!r}, which lake version {lk.version} "
                                  f"does not hold") from None
    from packers.schema import layout_of

    return PackedSource(uri=lk.uri, table=row["table"], lance_version=ds.version, lake_version=lk.version,
                        recipe_hash=row["recipe_hash"], layout=layout_of(ds.schema),
                        storage_options=lk.storage_options, backoff=backoff), ds
