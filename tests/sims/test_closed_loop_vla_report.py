"""The closed-loop benchmark's VLA-RL bookkeeping (no simulator runs here): a VLA-RL-only run never rebuilds the
SFT / actor-critic section (its workdir lacks the other tasks' results), and the VLA-RL section renders start, end,
the curve and the lineage from the saved result."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import closed_loop  # noqa: E402

NONE = Path("/nonexistent/earlier.md")  # no earlier rows: the tables hold only the results written here


def _args(**kw):
    return Namespace(**{"report_only": False, "tasks": [], "rl_task": "reach-v3", "rl_policy": "vla", **kw})


def _point(k, n, steps, version):
    lo, hi = k / n - 0.1, k / n + 0.1
    return {"env_steps": steps, "k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi, "eval_version": version}


def test_vla_rl_only_run_leaves_the_sft_section_alone(tmp_path):
    (tmp_path / "reach-v3").mkdir()
    assert not closed_loop.rebuilds_sft_section(_args(), tmp_path)  # nothing there at all
    (tmp_path / "reach-v3" / "result.json").write_text("{}")
    assert not closed_loop.rebuilds_sft_section(_args(), tmp_path)
    assert closed_loop.rebuilds_sft_section(_args(rl_policy="ac"), tmp_path)
    assert closed_loop.rebuilds_sft_section(_args(tasks=["reach-v3"], rl_task="none"), tmp_path)
    assert closed_loop.rebuilds_sft_section(_args(report_only=True), tmp_path)


def test_vla_section_renders_start_end_curve_and_lineage(tmp_path):
    assert closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=NONE) is None
    curve = [_point(25, 50, 0, 20), _point(12, 20, 900, 22), _point(40, 50, 2000, 24)]
    result = {"task": "reach-v3", "init": "/w/reach-v3/sft_80/step_000020.pt", "init_step": 20, "sigma": 0.1,
              "lr": 3e-4, "epochs": 2, "start": curve[0], "end": curve[-1], "curve": curve, "env_steps": 2000,
              "rl_seconds": 600.0, "lake_versions": [21, 23], "demo_version": 1, "command": "the command",
              "sft_lineage": {"lake_version": 2, "packed_table": "packed_abc"}}
    (tmp_path / "reach-v3").mkdir()
    (tmp_path / "reach-v3" / "rl_vla_result.json").write_text(json.dumps(result))
    text = closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=NONE)
    row = next(line for line in text.splitlines() if line.startswith("| reach-v3 |"))
    assert "25/50 = 50%" in row and "**40/50 = 80%" in row and "| 2000 |" in row
    assert "v1 / `packed_abc` / `step_000020.pt` (trained on v2) / v21, v23 / v20, v24" in row
    assert "0: 25/50, 900: 12/20, 2000: 40/50" in text and "`the command`" in text
    assert "| re-plan every step |" in row
    assert (tmp_path / "closed_loop_rl_vla.png").exists()
    # a chunked run (exec 4 of 8) is a second row beside it, its curve and note named by act mode
    chunked = {**result, "exec_steps": 4, "env_steps": 8000, "end": _point(45, 50, 8000, 30), "note": "chunks"}
    (tmp_path / "reach-v3" / "rl_vla_exec4_result.json").write_text(json.dumps(chunked))
    text = closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=NONE)
    rows = [line for line in text.splitlines() if line.startswith("| reach-v3 |")]
    assert len(rows) == 2 and "| exec 4 of 8 |" in rows[1] and "**45/50 = 90%" in rows[1] and "| 8000 |" in rows[1]
    assert "Note (reach-v3, exec 4 of 8, success, lr 0.0003, 16/version): chunks" in text
    table = text[text.index("| task |"):text.index("RL curve")].strip().splitlines()
    assert len(table) == 4 and all(line.startswith("|") for line in table)  # one table: header, rule, 2 rows


def test_paired_by_goal_counts_and_exact_mcnemar_p():
    assert closed_loop.paired("1100", "1010") == {"both": 1, "lost": 1, "gained": 1, "p": 1.0}
    # 7 lost, 1 gained: p = 2 * (C(8,0) + C(8,1)) / 2^8 (session 9's run 1)
    p = closed_loop.paired("1" * 25 + "0" * 25, "1" * 18 + "0" * 7 + "1" + "0" * 24)
    assert (p["both"], p["lost"], p["gained"]) == (18, 7, 1) and p["p"] == 18 / 256
    assert closed_loop.paired("0000", "0000") == {"both": 0, "lost": 0, "gained": 0, "p": 1.0}
    assert closed_loop.paired(None, "1") is None and closed_loop.paired("10", "1") is None


def test_a_flow_rwr_row_names_its_objective_and_pairs_start_and_end(tmp_path):
    curve = [{**_point(2, 4, 0, 20), "successes": "1100"}, {**_point(3, 4, 500, 24), "successes": "1011"}]
    base = {"task": "reach-v3", "init": "/w/reach-v3/sft_80/step_000020.pt", "init_step": 20, "sigma": 0.1,
            "lr": 3e-4, "epochs": 2, "start": curve[0], "end": curve[-1], "curve": curve, "env_steps": 500,
            "rl_seconds": 60.0, "lake_versions": [21, 23], "demo_version": 1, "command": "c", "exec_steps": 4,
            "sft_lineage": {"lake_version": 2, "packed_table": "packed_abc"}}
    (tmp_path / "reach-v3").mkdir()
    (tmp_path / "reach-v3" / "rl_vla_exec4_result.json").write_text(json.dumps({**base, "end": _point(1, 4, 9, 9)}))
    (tmp_path / "reach-v3" / "rl_vla_exec4_rwr_result.json").write_text(json.dumps(
        {**base, "tag": "rl_vla_exec4_rwr", "loss": "flow_rwr", "rwr_weight": "return", "rwr_beta": 1.0,
         "note": "rwr"}))
    text = closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=NONE)
    rows = [line for line in text.splitlines() if line.startswith("| reach-v3 |")]
    assert len(rows) == 2
    assert "| pg / 0.1 / " in rows[0] and "| — |" in rows[0]  # an old result: no per-goal strings, no pairing
    assert "| flow_rwr (return > 0) / 0.1 / 0.0003 / 2 / success / 16 |" in rows[1]
    assert "| 1 / 1 / 2, p = 1 |" in rows[1]
    assert "Note (reach-v3, exec 4 of 8, flow_rwr (return > 0), success, lr 0.0003, 16/version, run rwr): rwr" in text
    control = {**base, "tag": "rl_vla_exec4_c", "loss": "flow_rwr", "rwr_weight": "return", "rwr_beta": 1.0,
               "rwr_min_return": 1e9, "demo_coef": 1.0}
    (tmp_path / "reach-v3" / "rl_vla_exec4_c_result.json").write_text(json.dumps(control))
    text = closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=NONE)
    assert "| control: demos x 1.0 only (flow_rwr keeps no RL row: return > 1e+09) / 0.1 /" in text


def test_earlier_rows_join_the_table_and_their_text_follows_the_notes(tmp_path):
    curve = [_point(10, 50, 0, 20), _point(20, 50, 900, 22)]
    result = {"task": "push-v3", "init": "/w/push-v3/sft/step_000200.pt", "init_step": 200, "sigma": 0.3,
              "lr": 1e-4, "epochs": 2, "start": curve[0], "end": curve[-1], "curve": curve, "env_steps": 900,
              "rl_seconds": 60.0, "lake_versions": [21], "demo_version": 1, "command": "new", "exec_steps": 4,
              "batch_trajectories": 16, "group_size": 8, "note": "the new run",
              "sft_lineage": {"lake_version": 2, "packed_table": "packed_abc"}}
    (tmp_path / "push-v3").mkdir()
    (tmp_path / "push-v3" / "rl_vla_exec4_result.json").write_text(json.dumps(result))
    earlier = tmp_path / "earlier.md"
    earlier.write_text("# a comment\n## commands\n`old`\n## rows\n| reach-v3 | old row |\n## text\n\nNote (old): x\n")
    text = closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=earlier)
    table = text[text.index("| task |"):text.index("RL curve")].strip().splitlines()
    assert len(table) == 4 and table[2].startswith("| push-v3 |") and table[3] == "| reach-v3 | old row |"
    assert "| pg / 0.3 / 0.0001 / 2 / success / 16 (8 per goal) |" in table[2] and "Commands: `new`; `old`" in text and "a comment" not in text
    assert text.index("Note (push-v3, exec 4 of 8, success, lr 0.0001, sigma 0.3, 16 (8 per goal)/version)") \
        < text.index("Note (old): x")
    earlier.write_text("## rows\nnot a row\n")
    with pytest.raises(ValueError, match="not a table row"):
        closed_loop.vla_report(tmp_path, "cmd", "load", out=tmp_path, earlier=earlier)


def test_the_committed_earlier_rows_parse_as_table_rows():
    old = closed_loop.earlier_vla_rows()
    assert old["rows"] and all(r.startswith(("| reach-v3 |", "| push-v3 |")) for r in old["rows"]) and old["commands"]
    assert sum(r.startswith("| push-v3 |") for r in old["rows"]) == 5  # session 12's fixed-lr runs


def test_rl_group_sets_grpo_group_and_whole_group_micro_batches():
    grpo = {"algo.advantage": "grpo", "algo.group_size": 4}
    assert closed_loop._rl_group(Namespace(rl_group=None, rl_batch=16), grpo) == {}
    assert closed_loop._rl_group(Namespace(rl_group=8, rl_batch=16), grpo) == {
        "algo.group_size": 8, "algo.micro_batch_trajectories": 8}
    assert closed_loop._rl_group(Namespace(rl_group=2, rl_batch=16), grpo)["algo.micro_batch_trajectories"] == 4
    with pytest.raises(SystemExit, match="divide"):
        closed_loop._rl_group(Namespace(rl_group=8, rl_batch=12), grpo)
    with pytest.raises(SystemExit, match="no GRPO groups"):
        closed_loop._rl_group(Namespace(rl_group=8, rl_batch=16, rl_reward="dense"), {"algo.advantage": "gae"})


def test_a_run_resumed_with_fewer_segments_ends_on_the_full_held_out_goals(tmp_path, monkeypatch):
    import lake

    lake.open(str(tmp_path / "lake"))
    out = tmp_path / "rl"
    out.mkdir()
    point = {**_point(1, 20, 4000, 30), "version": 8, "lake_version": 29}
    (out / "segment_1.json").write_text(json.dumps({"point": point, "checkpoint": "rl_1.pt", "rl_seconds": 60.0}))
    calls = []

    def evaluate(ckpt, env_id, episodes, uri, ms, *a, **kw):
        calls.append((ckpt, episodes))
        return _point(7, episodes, 0, 31)

    monkeypatch.setattr(closed_loop, "evaluate_ckpt", evaluate)
    args = Namespace(rl_segments=1, rl_versions=8, rl_reward="success", episodes=50, curve_episodes=20)
    seg = closed_loop._rl_segments("push-v3", args, out, str(tmp_path / "lake"), "start.pt", _point(5, 50, 0, 1),
                                   1e-4, {})
    assert calls == [("rl_1.pt", 50)]  # nothing re-run: only the end re-evaluated on all 50 goals
    assert seg["end"]["k"] == 7 and seg["end"]["n"] == 50 and seg["end"]["env_steps"] == 4000
    assert seg["end"]["intermediate"] == {"k": 1, "n": 20} and seg["env_steps"] == 4000
    # a finished run's end (already on all the goals) is not evaluated again
    (out / "segment_1.json").write_text(json.dumps({"point": {**point, **_point(9, 50, 4000, 30)},
                                                    "checkpoint": "rl_1.pt", "rl_seconds": 60.0}))
    calls.clear()
    assert closed_loop._rl_segments("push-v3", args, out, str(tmp_path / "lake"), "start.pt", _point(5, 50, 0, 1),
                                    1e-4, {})["end"]["k"] == 9 and calls == []


def test_rl_seed_sets_the_first_segments_run_seed(tmp_path, monkeypatch):
    import training.rl

    seeds = []

    class Stop(Exception):
        pass

    def run(cfg):
        seeds.append(cfg.seed)
        raise Stop

    monkeypatch.setattr(training.rl, "run", run)
    for rl_seed, want in ((None, 1), (11, 11)):
        args = Namespace(rl_segments=2, rl_versions=8, rl_reward="success", episodes=50, curve_episodes=20,
                         **({"rl_seed": rl_seed} if rl_seed else {}))
        with pytest.raises(Stop):
            closed_loop._rl_segments("push-v3", args, tmp_path, str(tmp_path / "lake"), "s.pt", _point(5, 50, 0, 1),
                                     1e-4, {})
        assert seeds[-1] == want


def test_trainer_history_joins_segments_with_cumulative_env_steps_and_renders_each_version(tmp_path):
    """The learner's rows of a 2-segment chunked run (exec 4): env steps continue across segments (rows x 4),
    and the text line lists every version's rollout success, KL and lr in order."""
    run = tmp_path / "push-v3" / "rl_vla_exec4_x"
    run.mkdir(parents=True)
    for seg, rows in ((1, [(10, 0.25, 1e-4), (20, 0.5, 1.5e-4)]), (2, [(12, 0.75, 1e-4)])):
        hist = [{"consumed_steps": c, "success_rate": s, "update_kl": 0.01, "version_kl": 0.02, "lr": lr,
                 "dropped_stale": seg} for c, s, lr in rows]
        (run / f"segment_{seg}.json").write_text(json.dumps({"history": hist}))
    r = {"task": "push-v3", "tag": "rl_vla_exec4_x", "versions": 2, "exec_steps": 4}
    h = closed_loop.trainer_history(tmp_path, r)
    assert [x["env_steps"] for x in h] == [40, 80, 128] and [x["success_rate"] for x in h] == [0.25, 0.5, 0.75]
    line = closed_loop._trainer_line(h)
    assert "rollout success 0.25, 0.50, 0.75" in line and "lr 0.0001, 0.00015, 0.0001" in line
    assert line.endswith("too stale: 3")  # segment 1's 1 + segment 2's 2
    assert closed_loop.trainer_history(tmp_path, {**r, "tag": "gone"}) == []


def test_rl_select_val_chooses_the_earliest_best_validation_point_and_the_row_says_so():
    curve = [{"version": v, "val": {"k": k}} for v, k in ((0, 20), (2, 26), (4, 24), (6, 26), (8, 25))]
    assert closed_loop.best_on_validation(curve) == 1  # 26 twice: the earlier, version 2
    assert closed_loop.best_on_validation(curve[:1] + [{"version": 2, "val": {"k": 19}}]) == 0  # start kept
    r = {"versions": 8, "selection": {"episodes": 50, "versions": [0, 2, 4, 6, 8], "val": [20, 26, 24, 26, 25],
                                      "chosen_version": 2}}
    assert closed_loop._chosen(r) == (" (version 2 of 8, chosen on 50 validation goals: v0: 20, v2: 26, v4: 24, "
                                      "v6: 26, v8: 25)")
    assert closed_loop._chosen({"versions": 8}) == ""
