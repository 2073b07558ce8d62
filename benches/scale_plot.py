#!/usr/bin/env python3
"""Time and memory of the batch steps against the number of records, from the result file of
benches/scale.sh (one line per step and size), as an SVG of two panels, and a table on stdout:
each step's time per size, the growth exponent between neighbouring sizes (time ~ n^k: k = 1
is linear, n log n shows as k a little above 1 at these sizes) and the time relative to
n log n at the smallest size.

    python3 benches/scale_plot.py /tmp/customer_unify-bench/scale/scale-result.txt docs/benchmarks/scale.svg

Standard library only: the benchmark runs on a fresh machine without plotting packages.
"""
import math
import re
import sys
from collections import OrderedDict

LINE = re.compile(
    r"^(\d+)\s+(.+?)\s+(\S+)\s+([\d.]+) s\s+peak\s+(\d+) MB\s+private\s+(-?\d+) MB\s*$"
)
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def read(path):
    """{step: {rows: (seconds, private MB)}} in the order the steps first appear, and the budget."""
    steps, budget = OrderedDict(), None
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            rows, step, step_budget, secs, _peak, private = m.groups()
            steps.setdefault(step, {})[int(rows)] = (float(secs), int(private))
            if "held" not in step:
                budget = step_budget
    return steps, budget


def budget_mb(budget):
    m = re.match(r"(\d+)\s*(kB|MB|GB|TB)?$", budget or "")
    if not m:
        return None
    factor = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024, None: 1 / 1024}[m.group(2)]
    return int(m.group(1)) * factor


def table(steps):
    out = []
    sizes = sorted({n for s in steps.values() for n in s})
    out.append("step".ljust(24) + "".join(f"{n:>14,}" for n in sizes) + "   growth exponent k (t ~ n^k)   t / (n log n), smallest = 1")
    for step, points in steps.items():
        cells = "".join(
            f"{points[n][0]:>12.1f} s" if n in points else " " * 14 for n in sizes
        )
        have = [n for n in sizes if n in points]
        ks = [
            math.log(points[b][0] / points[a][0]) / math.log(b / a)
            for a, b in zip(have, have[1:])
            if points[a][0] > 0 and points[b][0] > 0
        ]
        base = have[0] * math.log2(have[0]) if have else 1
        rel = [
            points[n][0] / points[have[0]][0] / (n * math.log2(n) / base)
            for n in have
            if points[have[0]][0] > 0
        ]
        out.append(
            step.ljust(24)
            + cells
            + "   "
            + (", ".join(f"{k:.2f}" for k in ks) or "-").ljust(30)
            + ", ".join(f"{r:.2f}" for r in rel)
        )
    out.append("")
    out.append("step".ljust(24) + "".join(f"{n:>14,}" for n in sizes) + "   (private peak, MB)")
    for step, points in steps.items():
        out.append(
            step.ljust(24)
            + "".join(f"{points[n][1]:>11,} MB" if n in points else " " * 14 for n in sizes)
        )
    return "\n".join(out)


def svg(steps, budget):
    width, height, panel_w, top, bottom, left = 1000, 460, 400, 40, 100, 70
    sizes = sorted({n for s in steps.values() for n in s})
    xmin, xmax = math.log10(min(sizes)) - 0.05, math.log10(max(sizes)) + 0.05
    if xmax - xmin < 0.2:
        xmin, xmax = xmin - 0.3, xmax + 0.3
    times = [t for s in steps.values() for t, _ in s.values() if t > 0]
    tmin, tmax = math.log10(min(times)) - 0.1, math.log10(max(times)) + 0.1
    mems = [m for s in steps.values() for _, m in s.values()]
    limit = budget_mb(budget)
    mmax = max(mems + ([limit] if limit else [])) * 1.1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]

    def panel(x0, title, ylabel, y_of, ticks):
        h = height - top - bottom
        parts.append(f'<text x="{x0 + panel_w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>')
        parts.append(f'<rect x="{x0}" y="{top}" width="{panel_w}" height="{h}" fill="none" stroke="#444"/>')
        for value, label in ticks:
            y = y_of(value)
            parts.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        for n in sizes:
            x = x_at(x0, n)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + h}" stroke="#eee"/>')
            parts.append(f'<text x="{x:.1f}" y="{top + h + 16}" text-anchor="middle">{n / 1e6:g}M</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{top + h + 34}" text-anchor="middle">records (log scale)</text>')
        parts.append(
            f'<text transform="translate({x0 - 52},{top + h / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>'
        )

    def x_at(x0, n):
        return x0 + (math.log10(n) - xmin) / (xmax - xmin) * panel_w

    h = height - top - bottom
    t_y = lambda t: top + h - (math.log10(t) - tmin) / (tmax - tmin) * h
    decades = range(math.floor(tmin), math.ceil(tmax) + 1)
    t_ticks = [(10 ** d * f, f"{10 ** d * f:g} s") for d in decades for f in (1, 2, 5) if tmin <= math.log10(10 ** d * f) <= tmax]
    panel(left, "time per step", "seconds (log scale)", t_y, t_ticks)
    m_y = lambda m: top + h - m / mmax * h
    step_mb = 10 ** math.floor(math.log10(mmax / 2)) if mmax > 0 else 1
    m_ticks = [(k * step_mb, f"{k * step_mb:,.0f}") for k in range(0, int(mmax / step_mb) + 1)]
    x1 = left + panel_w + 110
    panel(x1, "private peak memory of the backend", "MB (VmHWM - RssShmem)", m_y, m_ticks)
    if limit:
        y = m_y(limit)
        parts.append(f'<line x1="{x1}" x2="{x1 + panel_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" stroke-dasharray="6,4"/>')
        parts.append(f'<text x="{x1 + panel_w - 4}" y="{y - 5:.1f}" text-anchor="end">batch_memory {budget}</text>')
    for i, (step, points) in enumerate(steps.items()):
        colour = COLOURS[i % len(COLOURS)]
        have = sorted(points)
        for x0, value_y, pick in ((left, t_y, 0), (x1, m_y, 1)):
            pts = [(x_at(x0, n), value_y(points[n][pick])) for n in have if pick == 1 or points[n][0] > 0]
            if len(pts) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for x, y in pts:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        lx = left + (i % 4) * 230
        ly = height - 36 + (i // 4) * 18
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="12" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly}">{step}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scale_plot.py RESULT_FILE OUT.svg")
    steps, budget = read(sys.argv[1])
    if not steps:
        sys.exit(f"no step lines in {sys.argv[1]}")
    print(table(steps))
    with open(sys.argv[2], "w") as f:
        f.write(svg(steps, budget))
    print(f"\nwrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
