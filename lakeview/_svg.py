"""Charts as inline SVG strings, drawn on the server: pages need no chart library and work offline.

Every function is pure (numbers in, markup out) and escapes the text it places.
"""

from __future__ import annotations

from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def _ticks(lo: float, hi: float) -> tuple[float, float]:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    return lo, hi


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def lines(xs, series: dict[str, np.ndarray], *, width: int = 460, height: int = 150, title: str = "",
          cursor: bool = False, css_class: str = "chart", xlabel: str = "") -> str:
    """A line chart of several series over ``xs``. ``cursor`` adds a vertical line (class ``cursor``) that the
    page's script moves; the x range goes in ``data-x0`` / ``data-x1`` so the script can place it."""
    xs = np.asarray(xs, np.float64)
    left, right, top, bottom = 44, 8, 18, 20
    w, h = width - left - right, height - top - bottom
    ys = [np.asarray(v, np.float64) for v in series.values()]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
    y0, y1 = _ticks(float(finite.min()) if finite.size else 0.0, float(finite.max()) if finite.size else 1.0)
    x0, x1 = _ticks(float(xs.min()) if xs.size else 0.0, float(xs.max()) if xs.size else 1.0)

    def px(x):
        return left + (x - x0) / (x1 - x0) * w

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * h

    out = [f'<svg class="{escape(css_class)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'data-x0="{x0}" data-x1="{x1}" data-left="{left}" data-plotw="{w}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{left}" y="12" class="title">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="frame"/>',
           f'<text x="{left - 4}" y="{top + 8}" class="tick" text-anchor="end">{_fmt(y1)}</text>',
           f'<text x="{left - 4}" y="{top + h}" class="tick" text-anchor="end">{_fmt(y0)}</text>',
           f'<text x="{left}" y="{height - 6}" class="tick">{_fmt(x0)}</text>',
           f'<text x="{left + w}" y="{height - 6}" class="tick" text-anchor="end">{_fmt(x1)} {escape(xlabel)}</text>']
    for i, (name, y) in enumerate(zip(series, ys)):
        ok = np.isfinite(y)
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs[ok], y[ok]))
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.4" points="{pts}">'
                   f'<title>{escape(name)}</title></polyline>')
    if len(series) > 1:
        for i, name in enumerate(series):
            out.append(f'<text x="{left + w - 4}" y="{top + 11 + 11 * i}" class="legend" text-anchor="end" '
                       f'fill="{PALETTE[i % len(PALETTE)]}">{escape(name)}</text>')
    if cursor:
        out.append(f'<line class="cursor" x1="{left}" x2="{left}" y1="{top}" y2="{top + h}"/>')
    out.append("</svg>")
    return "".join(out)


def histogram(values, *, bins: int = 30, width: int = 300, height: int = 120, title: str = "",
              xlabel: str = "") -> str:
    """A histogram of ``values`` (finite ones) as bars; empty input draws an empty frame."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    lo, hi = _ticks(float(v.min()) if v.size else 0.0, float(v.max()) if v.size else 1.0)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return bars([f"{edges[i]:.4g}–{edges[i + 1]:.4g}" for i in range(len(counts))], counts, width=width,
                height=height, title=title, x_range=(lo, hi), xlabel=xlabel)


def bars(labels, counts, *, width: int = 300, height: int = 120, title: str = "", x_range=None,
         xlabel: str = "") -> str:
    """Vertical bars, one per label; each bar's tooltip gives its label and count."""
    counts = np.asarray(counts, np.float64)
    left, right, top, bottom = 36, 6, 18, 20
    w, h = width - left - right, height - top - bottom
    peak = float(counts.max()) if counts.size and counts.max() > 0 else 1.0
    bw = w / max(len(counts), 1)
    out = [f'<svg class="chart hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{left}" y="12" class="title">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="frame"/>',
           f'<text x="{left - 4}" y="{top + 8}" class="tick" text-anchor="end">{_fmt(peak)}</text>',
           f'<text x="{left - 4}" y="{top + h}" class="tick" text-anchor="end">0</text>']
    for i, (label, c) in enumerate(zip(labels, counts)):
        bh = c / peak * h
        out.append(f'<rect class="bar" x="{left + i * bw + 0.5:.1f}" y="{top + h - bh:.1f}" '
                   f'width="{max(bw - 1, 0.5):.1f}" height="{bh:.1f}"><title>{escape(str(label))}: {int(c)}</title></rect>')
    if x_range is not None:
        out += [f'<text x="{left}" y="{height - 6}" class="tick">{_fmt(x_range[0])}</text>',
                f'<text x="{left + w}" y="{height - 6}" class="tick" text-anchor="end">{_fmt(x_range[1])} '
                f'{escape(xlabel)}</text>']
    elif len(labels) <= 12:
        for i, label in enumerate(labels):
            out.append(f'<text x="{left + (i + 0.5) * bw:.1f}" y="{height - 6}" class="tick" '
                       f'text-anchor="middle">{escape(str(label))[:10]}</text>')
    out.append("</svg>")
    return "".join(out)
