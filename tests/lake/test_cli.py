"""The `lake` command line: exit codes, readable output, $LAKE_URI."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lake
from lake.cli import main


def test_ingest_log_tag_diff_episodes_stats(tmp_path, pusht_v3, ray_session, capsys, monkeypatch):
    uri = str(tmp_path / "lake")
    assert main(["ingest", str(pusht_v3), "--lake", uri, "--split", "train=0.5,val=0.5", "-m", "first", "-q"]) == 0
    out = capsys.readouterr().out
    assert "version 1 (new); 6 episodes" in out
    monkeypatch.setenv("LAKE_URI", uri)  # --lake from the environment
    assert main(["tag", "v1"]) == 0
    assert main(["log"]) == 0
    out = capsys.readouterr().out
    assert "first" in out and "v1" in out and "create lake" in out
    assert main(["diff", "0", "v1"]) == 0
    out = capsys.readouterr().out.splitlines()
    ids = sorted(lake.open(uri).episodes()["episode_id"].to_pylist())
    assert out[0] == "0 -> 1: +6 episodes, -0 episodes" and sorted(l[2:] for l in out[1:]) == ids
    assert main(["episodes", "--split", "val", "--filter", "length > 0"]) == 0
    val = lake.open(uri).episodes(split="val").num_rows
    assert f"{val} episodes" in capsys.readouterr().out
    assert main(["stats"]) == 0
    assert "observation.state" in capsys.readouterr().out
    # ingesting again is a no-op, still exit 0
    assert main(["ingest", str(pusht_v3), "-q"]) == 0
    assert "(unchanged)" in capsys.readouterr().out


def test_errors_are_one_line_and_non_zero(tmp_path, capsys):
    assert main(["log", "--lake", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no lake at" in err[0]
    lake.open(tmp_path / "l")
    assert main(["tag", "x", "--version", "7", "--lake", str(tmp_path / "l")]) == 1
    assert "no lake version 7" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "lake.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "ingest" in out.stdout


@pytest.mark.parametrize("bad", ["train", "train=x"])
def test_bad_split_is_a_usage_error(bad, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["ingest", "src", "--lake", str(tmp_path), "--split", bad])
    assert e.value.code == 2
