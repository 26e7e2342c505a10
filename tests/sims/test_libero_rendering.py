"""The headless GL backend the sims pick (training/sims/_setup.py): a GPU EGL vendor, else OSMesa, else EGL."""

import pytest

from training.sims import SimulatorUnavailable
from training.sims._setup import default_backend, gpu_egl


def _libs(*present):
    return lambda name: name in present


@pytest.mark.parametrize("libs, gpu, expect", [
    (("EGL", "GL", "OSMesa"), True, "egl"),      # EGL reaches a GPU: hardware rendering
    (("EGL", "GL", "OSMesa"), False, "osmesa"),  # software either way: OSMesa (no EGL teardown errors)
    (("EGL", "GL"), False, "egl"),               # only EGL installed: software EGL
    (("OSMesa",), True, "osmesa"),               # a GPU vendor but no libEGL: OSMesa
    ((), False, None),                           # nothing: configure_rendering names the Debian packages
])
def test_default_backend_prefers_gpu_egl_then_osmesa(libs, gpu, expect):
    assert default_backend(_libs(*libs), lambda: gpu) == expect


def test_only_a_non_mesa_egl_vendor_counts_as_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_DIRS", str(tmp_path))
    (tmp_path / "50_mesa.json").write_text("{}")
    mesa_only = gpu_egl()
    (tmp_path / "10_nvidia.json").write_text("{}")
    assert gpu_egl() is True
    assert mesa_only is any(__import__("pathlib").Path("/dev/dri").glob("renderD*"))


def test_a_user_choice_of_backend_is_kept_and_a_missing_library_names_the_packages(monkeypatch):
    from training.sims import _setup

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(_setup, "_has_lib", lambda name: False)
    with pytest.raises(SimulatorUnavailable, match="libOSMesa is missing: install the Debian packages libegl1 libgl1 "
                                                   "libegl-mesa0 libosmesa6"):
        _setup.configure_rendering()
    monkeypatch.delenv("MUJOCO_GL")
    with pytest.raises(SimulatorUnavailable, match="no headless GL library"):
        _setup.configure_rendering()
