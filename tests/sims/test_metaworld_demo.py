"""`make demo`'s closing step (lake.demo.closed_loop) at toy size: demos land, the VLA trains on the stream, the
trained and untrained policies are evaluated on held-out goals, each evaluation a lake version, with lineage."""

import argparse

from sims_marks import needs_metaworld

import lake

pytestmark = needs_metaworld


def test_demo_closed_loop_runs_and_records_both_evaluations_with_lineage(tmp_path, ray_session, capsys):
    from lake.demo import closed_loop

    args = argparse.Namespace(lake=str(tmp_path / "lake_demo"), data=str(tmp_path / "data"), reach_demos=2, steps=3,
                              eval_episodes=2, eval_steps=8)
    closed_loop(args)
    out = capsys.readouterr().out
    lk = lake.open(str(tmp_path / "lake_demo_reach"))
    msgs = [e.message for e in lk.log()]
    assert sum(m.startswith("eval ") for m in msgs) == 2  # untrained + trained, each one lake version
    assert len(lk.episodes(split="eval")) == 4
    assert "untrained VLA (step 0): success" in out and "SFT VLA (step 3): success" in out
    assert "recipe " in out and "lake version" in out
    # a second run reuses the demos (ingest is a no-op) and the finished checkpoint
    closed_loop(args)
    assert "written before" in capsys.readouterr().out
