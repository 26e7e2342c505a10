"""The bookkeeping of the simulator benchmarks (no simulator runs here): the closed loop's checkpoint selection
on validation goals, its disjoint goal seeds, and rl_sims' steady-state rate, per-stage CPU and RESULTS merge."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import closed_loop  # noqa: E402
import rl_sims  # noqa: E402


def _point(step, k, n=50):
    return {"step": step, "k": k, "n": n, "checkpoint": f"step_{step:06d}.pt"}


def test_selection_takes_the_best_validation_point_and_the_earliest_on_a_tie():
    points = [_point(375, 10), _point(750, 21), _point(1125, 21), _point(1500, 18)]
    assert closed_loop._select(points)["step"] == 750
    assert closed_loop._select([_point(3000, 0)])["step"] == 3000


def test_demo_validation_and_evaluation_goals_are_disjoint_and_a_clash_is_refused(monkeypatch):
    closed_loop._held_out(600, 50, 50)  # the push settings: no shared env seed
    monkeypatch.setattr(closed_loop, "VAL_SEED", closed_loop.EVAL_SEED)
    with pytest.raises(RuntimeError, match="evaluation env seeds .* are also validation seeds"):
        closed_loop._held_out(10, 5, 5)
    monkeypatch.setattr(closed_loop, "VAL_SEED", closed_loop.DEMO_SEED)
    with pytest.raises(RuntimeError, match="validation env seeds .* are also demo seeds"):
        closed_loop._held_out(10, 5, 5)


def test_steady_rate_leaves_out_the_first_version():
    history = [{"time": 10.0, "consumed_steps": 80}, {"time": 14.0, "consumed_steps": 160},
               {"time": 18.0, "consumed_steps": 240}]
    assert rl_sims.steady(history)["steady_steps_per_s"] == pytest.approx(20.0)
    assert rl_sims.steady(history[:1])["steady_steps_per_s"] is None


def test_stage_cpu_window_interpolates_each_process_and_sums_a_stage():
    cpu = rl_sims.StageCPU()
    cpu.series = {1: ("EnvWorker", [(0.0, 0.0), (10.0, 10.0)]),       # one core busy
                  2: ("Trainer", [(0.0, 5.0), (4.0, 5.0), (10.0, 8.0)]),  # idle, then half a core
                  3: ("Trainer", [(0.0, 0.0), (10.0, 1.0)])}
    got = cpu.window(2.0, 8.0)
    assert got["EnvWorker"] == pytest.approx(1.0)
    assert got["Trainer"] == pytest.approx((2.0 + 0.6) / 6.0)
    assert got["LakeWriter"] == 0.0


def test_stage_cpu_names_actors_the_driver_and_ray_and_skips_other_sessions():
    import os
    import subprocess
    import time

    import ray  # noqa: F401 - puts Ray's vendored psutil on the path
    import psutil

    cpu = rl_sims.StageCPU()
    me = os.getpid()
    actor = subprocess.Popen(["bash", "-c", "exec -a ray::EnvWorker.run sleep 120"])
    idle = subprocess.Popen(["bash", "-c", "exec -a ray::IDLE sleep 120"])
    raylet = subprocess.Popen(["sleep", "120"])
    try:
        for _ in range(1200):  # until bash has exec'd the new name (up to a minute: seconds on a loaded machine)
            if psutil.Process(actor.pid).cmdline()[0] == "ray::EnvWorker.run" and \
                    psutil.Process(idle.pid).cmdline()[0] == "ray::IDLE":
                break
            time.sleep(0.05)
        assert cpu._classify(psutil.Process(actor.pid), me) == "EnvWorker"
        assert cpu._classify(psutil.Process(idle.pid), me) == "Ray"  # an idle worker: Ray's own until it is an actor
        assert cpu._classify(psutil.Process(raylet.pid), me) == "Ray"
        assert cpu._classify(psutil.Process(me), me) == "Driver"
        assert cpu._classify(psutil.Process(os.getppid()), me) is None  # not started by this run
    finally:
        for p in (actor, idle, raylet):
            p.kill()
            p.wait()


def test_recording_one_learner_keeps_the_other_learners_subsection(tmp_path, monkeypatch):
    import _report

    results = tmp_path / "RESULTS.md"
    results.write_text(f"# r\n\n## {rl_sims.SECTION}\n\n### small learner\n\nsmall text\n\n### sim-sized learner\n\n"
                       "old\n\n## Next\n\nkept\n")
    monkeypatch.setattr(_report, "RESULTS", results)
    body = rl_sims.merge_subsections({"sim-sized learner": "new"})
    assert body == "### small learner\n\nsmall text\n\n### sim-sized learner\n\nnew"
