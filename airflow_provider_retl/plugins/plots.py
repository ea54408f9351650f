"""Small inline SVG line charts for the sync pages (no JavaScript, no build step).

Every text that reaches the SVG (titles, series names, point labels) is escaped:
sync ids and labels are user data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

#: Colour per series, in order (readable on white; the same for the same position on every chart).
PALETTE = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#17becf")
WIDTH, HEIGHT = 420, 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 12, 26, 34


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"


def line_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> Markup:
    """An SVG chart of ``series`` (name -> one value per label, None: no point) over ``labels``.

    Each point is a ``<circle>`` whose ``<title>`` names the run, the series and the value,
    so hovering shows it. Series that are all zero or empty are left out, except the first.
    """
    shown = {name: list(values) for name, values in series.items() if any(v for v in values if v is not None)}
    if not shown and series:
        first = next(iter(series))
        shown = {first: list(series[first])}
    numbers = [v for values in shown.values() for v in values if v is not None]
    top = max(numbers, default=0.0) or 1.0
    n = len(labels)
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(i: int) -> float:
        return PAD_LEFT + (plot_w / 2 if n <= 1 else i * plot_w / (n - 1))

    def y(v: float) -> float:
        return PAD_TOP + plot_h - (v / top) * plot_h

    parts = [
        (
            f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<text x="{PAD_LEFT}" y="16" class="chart-title">{escape(title)}</text>',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH - PAD_RIGHT}" y2="{PAD_TOP + plot_h}" class="axis"/>',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{PAD_TOP + plot_h}" class="axis"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" class="tick" text-anchor="end">{_fmt(top)}</text>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    if n:
        parts.append(f'<text x="{x(0)}" y="{HEIGHT - 18}" class="tick">{escape(labels[0])}</text>')
        if n > 1:
            parts.append(
                f'<text x="{x(n - 1)}" y="{HEIGHT - 18}" class="tick" text-anchor="end">{escape(labels[-1])}</text>'
            )
    if not numbers and not n:
        parts.append(f'<text x="{PAD_LEFT + 8}" y="{PAD_TOP + plot_h / 2}" class="tick">no runs yet</text>')
    for index, (name, values) in enumerate(shown.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = [(x(i), y(v), v, i) for i, v in enumerate(values[:n]) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for px, py, value, i in points:
            parts.append(
                f'<circle class="point" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(labels[i])}: {escape(name)} {_fmt(value)}</title></circle>"
            )
        legend_x = PAD_LEFT + index * 80
        parts.append(f'<rect x="{legend_x}" y="{HEIGHT - 11}" width="9" height="9" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 12}" y="{HEIGHT - 3}" class="tick">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
