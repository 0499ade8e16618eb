"""Small SVG charts for the dashboard, drawn on the server: no script runs in the page (its policy allows
none), and a chart is readable without one. Colours are presentation attributes, not CSS."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

W, H, PAD = 680, 180, 56
PALETTE = ("#2b6cb0", "#d69e2e", "#c53030", "#2f855a", "#6b46c1", "#718096", "#dd6b20", "#319795")


def _frame(title: str, inner: str, legend: Sequence[tuple[str, str]], ident: str) -> str:
    keys = "".join(f'<tspan fill="{c}">■ </tspan><tspan>{escape(k)}  </tspan>' for k, c in legend)
    return (f'<figure class="chart" id="{escape(ident)}"><figcaption>{escape(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H + 24}" width="{W}" height="{H + 24}" '
            f'role="img" aria-label="{escape(title)}">'
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#a0aec0"/>{inner}'
            f'<text x="{PAD}" y="{H + 14}" font-size="12">{keys}</text></svg></figure>')


def _scale(top: float) -> float:
    return (H - 2 * PAD) / top if top > 0 else 0.0


def stacked_bars(title: str, ident: str, xs: Sequence[str], series: Mapping[str, Sequence[float]]) -> str:
    """One bar per x, stacked by series (the outcome mix per window)."""
    n = max(1, len(xs))
    totals = [sum(s[i] for s in series.values()) for i in range(len(xs))]
    k = _scale(max(totals, default=0.0))
    bw = (W - PAD - 8) / n
    parts = []
    for i in range(len(xs)):
        y = H - PAD
        for j, (name, values) in enumerate(series.items()):
            h = values[i] * k
            if h > 0:
                y -= h
                parts.append(f'<rect x="{PAD + i * bw + 1:.1f}" y="{y:.1f}" width="{max(1.0, bw - 2):.1f}" '
                             f'height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(xs[i])} '
                             f'{escape(name)}: {values[i]:g}</title></rect>')
    parts.append(_axis(max(totals, default=0.0), xs))
    return _frame(title, "".join(parts), [(s, PALETTE[j % len(PALETTE)]) for j, s in enumerate(series)], ident)


def lines(title: str, ident: str, xs: Sequence[str], series: Mapping[str, Sequence[float | None]],
          unit: str = "") -> str:
    """One line per series over the windows (gaps where a window has no value)."""
    top = max((v for s in series.values() for v in s if v is not None), default=0.0)
    k = _scale(top)
    step = (W - PAD - 8) / max(1, len(xs) - 1)
    parts = []
    for j, (name, values) in enumerate(series.items()):
        pts = [f"{PAD + i * step:.1f},{H - PAD - v * k:.1f}" for i, v in enumerate(values) if v is not None]
        colour = PALETTE[j % len(PALETTE)]
        if len(pts) > 1:
            parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in pts:
            x, y = p.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
    parts.append(_axis(top, xs, unit))
    return _frame(title, "".join(parts), [(s, PALETTE[j % len(PALETTE)]) for j, s in enumerate(series)], ident)


def _axis(top: float, xs: Sequence[str], unit: str = "") -> str:
    labels = [f'<text x="4" y="{PAD}" font-size="11">{top:.4g}{escape(unit)}</text>',
              f'<text x="4" y="{H - PAD}" font-size="11">0</text>']
    if xs:
        labels.append(f'<text x="{PAD}" y="{H - PAD + 14}" font-size="11">{escape(xs[0])}</text>')
        labels.append(f'<text x="{W - 40}" y="{H - PAD + 14}" font-size="11">{escape(xs[-1])}</text>')
    return "".join(labels)
