"""``EpisodeTable``: a stand-in for the Hugging Face ``datasets.Dataset`` LeRobot keeps as ``meta.episodes``.

It answers what LeRobot's code asks of it: ``len`` (episodes), ``table["column"]`` (a column as a list),
``table[i]`` (one episode as a dict), iteration over rows, ``column_names``, ``num_rows``, ``select(indices)``,
``to_pandas()`` and ``with_format``(a no-op). Built from plain columns; no ``datasets`` dependency.
"""

from __future__ import annotations


class EpisodeTable:
    def __init__(self, columns: dict[str, list]):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"episode columns of different lengths: { {k: len(v) for k, v in columns.items()} }")
        self._cols = {k: list(v) for k, v in columns.items()}
        self._n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._n

    @property
    def num_rows(self) -> int:
        return self._n

    @property
    def column_names(self) -> list[str]:
        return list(self._cols)

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._cols[key]
        if isinstance(key, slice):
            return {k: v[key] for k, v in self._cols.items()}  # as datasets: a dict of column slices
        i = int(key)
        if not -self._n <= i < self._n:
            raise IndexError(f"episode {i} out of range for {self._n} episodes")
        return {k: v[i] for k, v in self._cols.items()}

    def __contains__(self, key) -> bool:  # dict-style checks by older callers: "dataset_from_index" in episodes
        return key in self._cols

    def keys(self):
        return self._cols.keys()

    def __iter__(self):
        return (self[i] for i in range(self._n))

    def select(self, indices) -> "EpisodeTable":
        idx = [int(i) for i in indices]
        return EpisodeTable({k: [v[i] for i in idx] for k, v in self._cols.items()})

    def with_format(self, *args, **kwargs) -> "EpisodeTable":
        return self

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self._cols)

    def __repr__(self) -> str:
        return f"EpisodeTable(num_rows={self._n}, columns={self.column_names})"
