"""Env ids and the install guard: clear errors without any simulator installed."""

import pytest

from training.sims import SimulatorUnavailable
from training.sims._setup import require
from training.sims.libero import parse
from training.sims.metaworld import task_name


def test_a_missing_simulator_raises_one_line_naming_the_extra():
    with pytest.raises(SimulatorUnavailable, match=r"Foo is not installed: pip install -e '\.\[sims\]' \(or `make sims`\)"):
        require("no_such_simulator_pkg", "Foo")


def test_libero_ids_name_suite_task_and_optional_init_state():
    assert parse("libero/libero_object/3") == ("libero_object", 3, None)
    assert parse("libero/spatial/0/7") == ("libero_spatial", 0, 7)
    assert parse("libero/libero_10/9") == ("libero_10", 9, None)
    for bad in ("libero/libero_object", "libero/libero_90/1", "libero/libero_goal/x", "libero/goal/1/2/3", "metaworld/x"):
        with pytest.raises(ValueError, match="not a LIBERO env id"):
            parse(bad)


def test_metaworld_ids_name_the_task():
    assert task_name("metaworld/push-v3") == "push-v3"
    with pytest.raises(ValueError, match="not a Meta-World env id"):
        task_name("metaworld/")
