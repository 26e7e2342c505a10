"""The RL lake writer survives a compaction that races another writer of the same lake (two RL runs sharing one
lake lost a whole segment to this): recorded as a failure, not raised; any other compaction error still raises."""

from __future__ import annotations

import pytest

import lake
from training.rl.config import LakeConfig
from training.rl.lake_writer import LakeWriter

RACE = "Incompatible transaction: This ReserveFragments transaction is incompatible with concurrent transaction Overwrite"


def _writer(tmp_path):
    lake.open(str(tmp_path / "lake"))
    return LakeWriter(str(tmp_path / "lake"), LakeConfig(uri=str(tmp_path / "lake")), "metaworld/reach-v3", "r1",
                      80.0, "sawyer")


@pytest.mark.parametrize("error", [OSError(RACE), RuntimeError("table episodes changed during compaction; run again")])
def test_a_compaction_losing_a_race_is_recorded_not_raised(tmp_path, monkeypatch, error):
    w = _writer(tmp_path)

    def compact(**kw):
        raise error

    monkeypatch.setattr(w.lk, "compact", compact)
    report = w.flush(compact=True)  # the path Trainer.finish takes: it raised here before
    assert report.compactions == 0 and len(report.failures) == 1 and "lost a race" in report.failures[0]


def test_any_other_compaction_error_raises(tmp_path, monkeypatch):
    w = _writer(tmp_path)

    def compact(**kw):
        raise OSError("disk full")

    monkeypatch.setattr(w.lk, "compact", compact)
    with pytest.raises(OSError, match="disk full"):
        w.flush(compact=True)
