"""Headless rendering and the simulators' own folders, set before MuJoCo or LIBERO is imported.

MuJoCo reads ``MUJOCO_GL`` once, at import. The default is ``egl`` where EGL reaches a GPU (a glvnd vendor
other than Mesa, e.g. NVIDIA's, or a DRM render node), else ``osmesa``: without a GPU both are Mesa's llvmpipe
software renderer at the same CPU time per frame (benchmarks/RESULTS.md, "Rendering backend"), and robosuite's
EGL context prints EGLError tracebacks when freed at exit; ``egl`` when only EGL is installed. Mesa writes a shader cache
and LIBERO reads a path config; both are pointed at writable folders under the user cache so nothing prompts
or fails on a read-only home. A variable the user already set is kept.
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

DEBIAN_PACKAGES = "libegl1 libgl1 libegl-mesa0 libosmesa6"
_HINT = f"install the Debian packages {DEBIAN_PACKAGES} (or run `make sims`)"


class SimulatorUnavailable(ImportError):
    """A simulator or a system library it needs is missing; the message says what to install."""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "episode-lake"


def _has_lib(name: str) -> bool:
    return ctypes.util.find_library(name) is not None


_EGL_VENDOR_DIRS = ("/etc/glvnd/egl_vendor.d", "/usr/share/glvnd/egl_vendor.d")


def gpu_egl() -> bool:
    """Whether EGL can render on a GPU: a glvnd EGL vendor that is not Mesa's (NVIDIA ships one), or a DRM
    render node (Mesa then drives the GPU). Mesa's vendor alone means llvmpipe, software rendering."""
    dirs = [d for d in os.environ.get("__EGL_VENDOR_LIBRARY_DIRS", "").split(":") if d] or _EGL_VENDOR_DIRS
    vendors = [p for d in dirs for p in Path(d).glob("*.json")]
    return any("mesa" not in p.name.lower() for p in vendors) or any(Path("/dev/dri").glob("renderD*"))


def default_backend(has_lib=None, gpu=None) -> str | None:
    """``egl`` with a GPU behind it, else ``osmesa``, else software ``egl``; None when neither library is
    installed. ``has_lib(name)`` / ``gpu()`` default to this machine's."""
    has_lib, gpu = has_lib or _has_lib, gpu or gpu_egl
    egl, osmesa = has_lib("EGL") and has_lib("GL"), has_lib("OSMesa")
    if egl and (gpu() or not osmesa):
        return "egl"
    return "osmesa" if osmesa else None


def configure_rendering() -> str:
    """Set ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` / ``MESA_SHADER_CACHE_DIR`` (unless set); returns the GL
    backend. Raises SimulatorUnavailable naming the Debian packages when neither EGL nor OSMesa is there."""
    backend = os.environ.get("MUJOCO_GL")
    if backend is None:
        backend = default_backend()
        if backend is None:
            raise SimulatorUnavailable(f"no headless GL library (libEGL or libOSMesa) found: {_HINT}")
        os.environ["MUJOCO_GL"] = backend
    elif backend in ("egl", "osmesa") and not _has_lib("EGL" if backend == "egl" else "OSMesa"):
        raise SimulatorUnavailable(f"MUJOCO_GL={backend} but lib{'EGL' if backend == 'egl' else 'OSMesa'} is "
                                   f"missing: {_HINT}")
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    shader = cache_dir() / "mesa_shader_cache"
    shader.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MESA_SHADER_CACHE_DIR", str(shader))
    return backend


def configure_libero() -> Path:
    """Point ``LIBERO_CONFIG_PATH`` at a writable folder (LIBERO reads an optional config.yaml there and
    would otherwise look in ~/.config); the packaged assets need no download."""
    path = Path(os.environ.get("LIBERO_CONFIG_PATH") or cache_dir() / "libero")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["LIBERO_CONFIG_PATH"] = str(path)
    return path


def require(module: str, what: str):
    """``import module`` after the rendering setup; SimulatorUnavailable with the install line if absent."""
    import importlib

    configure_rendering()
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if getattr(e, "name", None) and e.name.split(".")[0] == module.split(".")[0]:
            raise SimulatorUnavailable(f"{what} is not installed: pip install -e '.[sims]' (or `make sims`)") from None
        if "lib" in str(e) and ".so" in str(e):  # a shared library the GL bindings load
            raise SimulatorUnavailable(f"{what}: {e}; {_HINT}") from None
        raise


def available(module: str) -> bool:
    """Whether ``module`` can be found (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None
