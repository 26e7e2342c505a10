"""Lake writer (a Ray actor): finished trajectories into the lake as episodes, a few per lake version.

One trajectory is one ``lake.NewEpisode``; ``commit_every`` of them make one small commit (one lake
version); every ``compact_every`` commits ``lk.compact`` merges fragments, so a long run does not leave
thousands of tiny files. Episode ids are content ids: appending a trajectory twice is a no-op, so a retried
commit can never duplicate one. Calls are served one at a time, in the order the trainer sent them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class WriterReport:
    trajectories: tuple[str, ...]  # trajectory ids committed, in order
    episodes_added: int  # new lake episodes (a re-appended trajectory adds none)
    commits: int
    compactions: int
    lake_version: int | None  # newest lake version this writer made
    max_fragments: int  # most fragments the episodes table had after any commit
    busy_s: float
    failures: tuple[str, ...]  # commit errors that were retried, compactions that lost a race


class LakeWriter:
    def __init__(self, uri: str, lake_cfg, env_id: str, run_id: str, fps: float, robot_type: str,
                 storage_options: dict | None = None):
        import lake

        self.lk = lake.open(uri, storage_options=storage_options)
        self.cfg, self.env_id, self.run_id, self.fps, self.robot_type = lake_cfg, env_id, run_id, fps, robot_type
        self._buffer: list = []
        self._ids: list[str] = []
        self._added = self._commits = self._compactions = self._max_frags = 0
        self._version: int | None = None
        self._busy = 0.0
        self._failures: list[str] = []

    def ready(self) -> bool:
        return True

    def submit(self, traj) -> None:
        from .trajectory import to_new_episode

        self._buffer.append((traj.traj_id, to_new_episode(traj, env_id=self.env_id, run_id=self.run_id,
                                                          images=self.cfg.images)))
        if len(self._buffer) >= self.cfg.commit_every:
            self._commit(raise_errors=False)

    def _commit(self, raise_errors: bool) -> None:
        if not self._buffer:
            return
        t = time.perf_counter()
        batch = list(self._buffer)
        versions = [ep.policy_version for _, ep in batch]
        try:
            rep = self.lk.append_episodes([ep for _, ep in batch], source=self.cfg.source, fps=self.fps,
                                          robot_type=self.robot_type, split="rl",
                                          message=f"rl {self.run_id}: {len(batch)} trajectories "
                                                  f"(policy versions {min(versions)}..{max(versions)})")
        except Exception as e:  # noqa: BLE001 - kept buffered; the next commit (or flush) retries them
            self._failures.append(f"{type(e).__name__}: {e}")
            self._busy += time.perf_counter() - t
            if raise_errors:
                raise
            return
        self._buffer = self._buffer[len(batch):]
        self._ids.extend(i for i, _ in batch)
        self._added += rep.episodes_added
        if rep.version is not None:
            self._version, self._commits = rep.version, self._commits + 1
            self._max_frags = max(self._max_frags, len(self.lk.table("episodes").get_fragments()))
            if self._commits % max(self.cfg.compact_every, 1) == 0:
                self._compact()
        self._busy += time.perf_counter() - t

    def _compact(self) -> None:
        """Merge fragments. A compaction racing another writer of the same lake (Lance's "incompatible
        transaction" / "conflict", or the lake's "changed during compaction") only loses an optimization: it is
        recorded in ``failures`` and the next one retries; the trajectories are committed already. Any other
        error raises (seen: two RL runs on one lake lost a whole segment to such a race in ``finish``)."""
        try:
            entry = self.lk.compact(min_fragments=self.cfg.compact_min_fragments,
                                    message=f"rl {self.run_id}: compact")
        except (OSError, RuntimeError) as e:
            msg = str(e).lower()
            if not any(w in msg for w in ("incompatible transaction", "conflict", "changed during compaction")):
                raise
            self._failures.append(f"compaction lost a race (skipped): {type(e).__name__}: {str(e)[:200]}")
            return
        if entry is not None:
            self._version, self._compactions = entry.version, self._compactions + 1

    def flush(self, compact: bool = True) -> WriterReport:
        """Commit what is buffered (raising if that fails), compact, and report."""
        self._commit(raise_errors=True)
        t = time.perf_counter()
        if compact:
            self._compact()
        self._busy += time.perf_counter() - t
        return WriterReport(tuple(self._ids), self._added, self._commits, self._compactions, self._version,
                            self._max_frags, self._busy, tuple(self._failures))
