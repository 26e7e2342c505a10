"""PyAV differences between the versions the project supports (av 15 .. 18), in one place.

LeRobot 0.4 pins av<16, the project's own venv has av 18: code that calls PyAV goes through here wherever the
API differs between them.
"""

from __future__ import annotations

import functools


@functools.cache
def _threads_kwarg() -> bool:
    """Whether ``VideoFrame.to_ndarray`` takes ``threads=`` (av >= 16; av 15 raises TypeError). Probed once on a
    2x2 frame rather than read off the version string, so a backport or a build without it is answered right."""
    import av

    try:
        av.VideoFrame(2, 2, "rgb24").to_ndarray(format="rgb24", threads=1)
    except TypeError:
        return False
    return True


def to_ndarray(frame, fmt: str):
    """``frame.to_ndarray(format=fmt)`` on one swscale thread where PyAV lets us choose (its own threading costs
    more than it saves on small frames; av 15 converts on one thread anyway)."""
    if _threads_kwarg():
        return frame.to_ndarray(format=fmt, threads=1)
    return frame.to_ndarray(format=fmt)
