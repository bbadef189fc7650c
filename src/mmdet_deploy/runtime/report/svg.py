"""Inline SVG charts for the review report: the p(fake) histogram and the per-window timeline of a video.

Only numbers go into these charts (no user text), and each chart's size is bounded: a histogram has a fixed
number of bins, a timeline at most :data:`MAX_POINTS` steps (longer videos show the maximum p(fake) of each
group of consecutive windows, the most suspicious one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mmdet_deploy.runtime.report.data import WindowRecord

BINS = 20
#: Steps drawn at most in one timeline (the page size must not grow with the length of a video).
MAX_POINTS = 200
#: Windows up to which each one gets its own boundary tick and hover text.
DETAILED_WINDOWS = 60


def _f(value: float) -> str:
    """A compact coordinate."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _label(t: float) -> str:
    """An axis label: 3 significant digits, whole numbers from 100 on (no exponent notation)."""
    return f"{t:.0f}" if abs(t) >= 100 else f"{t:.3g}"


def histogram(probs: Sequence[float], threshold: float, no_face: Sequence[float] = ()) -> str:
    """An SVG histogram of p(fake) over [0, 1] in :data:`BINS` bins, ``no_face`` files stacked on top,
    with the decision threshold drawn as a dashed line."""
    width, height, left, right, top, bottom = 520, 180, 36, 14, 22, 30
    plot_w, plot_h = width - left - right, height - top - bottom

    def counts(values: Sequence[float]) -> list[int]:
        bins = [0] * BINS
        for p in values:
            if math.isfinite(p):
                bins[min(BINS - 1, max(0, int(p * BINS)))] += 1
        return bins

    faces, none = counts(probs), counts(no_face)
    peak = max([a + b for a, b in zip(faces, none, strict=True)] + [1])
    bar_w = plot_w / BINS
    parts = [f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="histogram of p(fake)">']
    parts.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>')
    for i, (a, b) in enumerate(zip(faces, none, strict=True)):
        x = left + i * bar_w
        lo, hi = i / BINS, (i + 1) / BINS
        for count, below, cls in ((a, 0, "bar"), (b, a, "bar nf")):
            if count:
                h = plot_h * count / peak
                y = top + plot_h - plot_h * below / peak - h
                parts.append(f'<rect class="{cls}" x="{_f(x + 1)}" y="{_f(y)}" width="{_f(bar_w - 2)}" '
                             f'height="{_f(h)}"><title>p(fake) {lo:.2f}-{hi:.2f}: {count} file(s)'
                             f'{" without a face" if cls != "bar" else ""}</title></rect>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * plot_w
        parts.append(f'<text class="tick" x="{_f(x)}" y="{height - 12}" text-anchor="middle">{tick:g}</text>')
    parts.append(f'<text class="tick" x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>')
    parts.append(f'<text class="tick" x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    parts.append(f'<text class="tick" x="{left + plot_w}" y="{height - 1}" text-anchor="end">p(fake)</text>')
    tx = left + min(1.0, max(0.0, threshold)) * plot_w
    parts.append(f'<line class="thr" x1="{_f(tx)}" y1="{top - 6}" x2="{_f(tx)}" y2="{top + plot_h}"/>')
    parts.append(f'<text class="thr-label" x="{_f(tx + 4)}" y="{top - 8}">threshold {threshold:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _groups(windows: Sequence[WindowRecord]) -> list[tuple[float, float, float, int, int]]:
    """(start, end, p, first window, last window) steps; consecutive windows merged (max p) past MAX_POINTS."""
    seconds = all(w.start_s is not None and w.end_s is not None for w in windows)

    def span(w: WindowRecord) -> tuple[float, float]:
        if seconds:
            assert w.start_s is not None and w.end_s is not None
            return w.start_s, w.end_s
        return float(w.start_frame), float(w.end_frame + 1)

    size = max(1, math.ceil(len(windows) / MAX_POINTS))
    steps = []
    for i in range(0, len(windows), size):
        group = windows[i : i + size]
        steps.append((span(group[0])[0], span(group[-1])[1], max(w.prob_fake for w in group),
                      group[0].window, group[-1].window))
    return steps


def timeline(windows: Sequence[WindowRecord], threshold: float) -> str:
    """p(fake) of each window over time (seconds, or frames when the frame rate is unknown), window
    boundaries ticked and, for short videos, labelled; the threshold dashed."""
    if not windows:
        return ""
    seconds = all(w.start_s is not None and w.end_s is not None for w in windows)
    unit = "s" if seconds else "frames"
    steps = _groups(windows)
    width, height, left, right, top, bottom = 320, 96, 26, 10, 8, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    t0, t1 = steps[0][0], steps[-1][1]
    scale = plot_w / (t1 - t0) if t1 > t0 else 0.0

    def x(t: float) -> float:
        return left + (t - t0) * scale

    def y(p: float) -> float:
        return top + plot_h * (1.0 - min(1.0, max(0.0, p)))

    parts = [f'<svg class="tl" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="p(fake) per window over time">']
    parts.append(f'<rect class="plot" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    parts.append(f'<line class="thr" x1="{left}" y1="{_f(y(threshold))}" x2="{left + plot_w}" '
                 f'y2="{_f(y(threshold))}"/>')
    detailed = len(windows) <= DETAILED_WINDOWS
    if detailed:  # one tick per window boundary
        ticks = "".join(f"M{_f(x(s))} {top + plot_h}v4" for s, *_ in steps) + f"M{_f(x(t1))} {top + plot_h}v4"
        parts.append(f'<path class="bound" d="{ticks}"/>')
    path = []
    for start, end, p, *_ in steps:
        path.append(f"{'M' if not path else 'L'}{_f(x(start))} {_f(y(p))}H{_f(x(end))}")
    parts.append(f'<path class="step" d="{"".join(path)}"/>')
    if detailed:
        for start, end, p, first, _ in steps:
            parts.append(f'<rect class="hit" x="{_f(x(start))}" y="{top}" width="{_f(max(1.0, x(end) - x(start)))}" '
                         f'height="{plot_h}"><title>window {first}: {start:g}-{end:g} {unit}, '
                         f'p(fake) {p:.3f}</title></rect>')
    # Boundaries labelled in their unit: all of them when they fit, else every k-th (at most ~8 labels).
    bounds = [s for s, *_ in steps] + [t1]
    every = max(1, math.ceil(len(bounds) / 8))
    labels = bounds[::every] if (len(bounds) - 1) % every == 0 else bounds[::every] + [t1]
    for t in labels:
        parts.append(f'<text class="tick" x="{_f(x(t))}" y="{height - 16}" text-anchor="middle">{_label(t)}</text>')
    merged = math.ceil(len(windows) / len(steps))
    note = "" if merged == 1 else f" ({len(windows)} windows: max of each {merged})"
    parts.append(f'<text class="tick" x="{left + plot_w}" y="{height - 3}" text-anchor="end">{unit}{note}</text>')
    parts.append(f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">1</text>')
    parts.append(f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)
