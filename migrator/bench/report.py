"""The capacity report: latency percentiles and per-user speed against concurrent users, per backend.

`report.html` is self-contained (inline SVG charts, tables; no script, no network) so it can be mailed or
opened on the box itself. `report.png` holds the same charts when matplotlib is installed (the `report`
extra); without it the HTML is still complete and the PNG is skipped with a note.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

CHARTS = [  # (title, unit, value of one probe, SLO key drawn as a dashed line, "max" or "min" for the SLO)
    ("P99 time to first token", "ms", lambda p: p["ttft_ms"]["p99"], "ttft_ms", "max"),
    ("Output speed per user (median)", "tok/s", lambda p: p["per_user_output_tokens_per_s"], "tokens_per_s", "min"),
    ("P99 end-to-end latency", "s", lambda p: None if p["e2e_ms"]["p99"] is None else p["e2e_ms"]["p99"] / 1000,
     "e2e_s", "max"),
]
COLOURS = {"ollama": "#d9822b", "vllm": "#2b6cd9"}


def series(runs: dict[str, dict], value) -> dict[str, list[tuple[int, float]]]:
    return {label: [(p["users"], value(p)) for p in run["probes"] if value(p) is not None]
            for label, run in runs.items()}


def svg_chart(title: str, unit: str, lines: dict[str, list[tuple[int, float]]], slo: float | None) -> str:
    """A line chart, users on a log2 axis. Plain SVG: readable in any browser, diffable as text."""
    w, h, left, right, top, bottom = 460, 260, 56, 12, 28, 36
    xs = [x for pts in lines.values() for x, _ in pts] or [1]
    ys = [y for pts in lines.values() for _, y in pts] + ([slo] if slo is not None else [])
    x_max = max(2, max(xs))
    y_max = (max(ys) if ys else 1) * 1.1 or 1

    def px(x: float) -> float:
        return left + (w - left - right) * math.log2(max(x, 1)) / math.log2(x_max)

    def py(y: float) -> float:
        return h - bottom - (h - top - bottom) * y / y_max

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)} ({unit})</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#444"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#444"/>']
    tick = 1
    while tick <= x_max:
        out.append(f'<text x="{px(tick):.1f}" y="{h - bottom + 14}" font-size="10" text-anchor="middle">{tick}</text>')
        tick *= 2
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 4}" font-size="10" text-anchor="middle">'
               'concurrent users</text>')
    for frac in (0, 0.5, 1):
        y = y_max / 1.1 * frac
        out.append(f'<text x="{left - 4}" y="{py(y) + 3:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    if slo is not None:
        out.append(f'<line x1="{left}" y1="{py(slo):.1f}" x2="{w - right}" y2="{py(slo):.1f}" stroke="#c00" '
                   f'stroke-dasharray="4 3"/><text x="{w - right}" y="{py(slo) - 3:.1f}" font-size="10" '
                   f'fill="#c00" text-anchor="end">SLO {slo:g}</text>')
    for n, (label, pts) in enumerate(lines.items()):
        colour = COLOURS.get(label, "#555")
        if pts:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        out.append(f'<text x="{left + 8 + 70 * n}" y="{top + 10}" font-size="11" fill="{colour}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, (int, float)) else html.escape(str(value))


def _server_cells(p: dict) -> str:
    """The server's own view at one user count: vLLM's queue and KV cache, the TTFT split, Ollama's VRAM share."""
    server, split = p.get("server") or {}, p.get("ttft_split") or {}
    kv = server.get("kv_cache_usage_peak")
    share = server.get("vram_share")
    return (f"<td>{_cell(server.get('waiting_peak'))}</td><td>{'—' if kv is None else f'{kv:.0%}'}</td>"
            f"<td>{_cell(split.get('queue_ms'))} / {_cell(split.get('rest_ms'))}</td>"
            f"<td>{'—' if share is None else f'{share:.0%}'}</td>")


def render_html(runs: dict[str, dict], rows: list[dict] | None, slo: dict) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>graphrag-migrate capacity report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>",
             "<h1>Capacity: concurrent users at the plan's SLOs</h1>",
             f"<p>Real-time SLO: TTFT ≤ {slo['ttft_ms']:g} ms and output speed ≥ {slo['tokens_per_s']:g} tok/s per "
             f"request; 30-second SLO: E2E ≤ {slo['e2e_s']:g} s; a user count is served when ≥ "
             f"{slo['fraction']:.0%} of its requests meet the SLO.</p>"]
    if rows:
        parts.append("<table><tr><th>figure</th><th>Ollama</th><th>vLLM</th><th>vLLM / Ollama</th>"
                     "<th>plan: Ollama</th><th>plan: vLLM</th></tr>")
        for r in rows:
            parts.append(f"<tr><td>{html.escape(r['figure'])} {html.escape(r['unit'])}</td><td>{_cell(r['ollama'])}</td>"
                         f"<td>{_cell(r['vllm'])}</td><td>{_cell(r['ratio'])}</td><td>{_cell(r['plan_ollama'])}</td>"
                         f"<td>{_cell(r['plan_vllm'])}</td></tr>")
        parts.append("</table>")
    for label, run in runs.items():
        predicted = run.get("predicted")
        if predicted and predicted.get("rows"):
            parts.append(f"<h2>{html.escape(label)}: predicted (phase1's ceilings on {html.escape(str(predicted['gpu']))}) "
                         "vs measured</h2><table><tr><th>figure</th><th>predicted</th><th>measured</th>"
                         "<th>measured / predicted</th></tr>")
            parts += [f"<tr><td>{html.escape(r['metric'])}</td><td>{_cell(r['predicted'])}</td>"
                      f"<td>{_cell(r['measured'])}</td><td>{_cell(r['measured_share'])}</td></tr>"
                      for r in predicted["rows"]]
            parts.append("</table><p>Speeds and users are ceilings (measured ≤ predicted); the TTFT is a floor.</p>")
    for title, unit, value, slo_key, _ in CHARTS:
        parts.append(svg_chart(title, unit, series(runs, value), slo.get(slo_key)))
    for label, run in runs.items():
        cap = run["capacity"]
        parts.append(f"<h2>{html.escape(label)} — {html.escape(run['target']['url'])} "
                     f"({html.escape(run['target']['model'])})</h2>")
        parts.append(f"<p>real-time users: <b>{cap['realtime']['users']}</b> (90 % interval "
                     f"{cap['realtime']['ci'][0]}–{_cell(cap['realtime']['ci'][1])}); within 30 s: "
                     f"<b>{cap['wait']['users']}</b></p>")
        thinks = any((p.get("thinking") or {}).get("requests") for p in run["probes"])
        parts.append("<table><tr><th>users</th><th>requests</th><th>TTFT p50 ms</th><th>TTFT p99 ms</th>"
                     + ("<th>TTFA p99 ms (answer after thinking)</th>" if thinks else "")
                     + "<th>E2E p99 ms</th><th>tok/s per user</th><th>real-time met</th><th>30 s met</th>"
                     "<th>goodput req/s</th><th>server: waiting peak</th><th>KV cache peak</th>"
                     "<th>TTFT p50 queueing / rest ms</th><th>Ollama model in VRAM</th></tr>")
        for p in run["probes"]:
            parts.append(f"<tr><td>{p['users']}</td><td>{p['completed']}/{p['requests']}</td>"
                         f"<td>{_cell(p['ttft_ms']['median'])}</td><td>{_cell(p['ttft_ms']['p99'])}</td>"
                         + (f"<td>{_cell((p.get('ttfa_ms') or {}).get('p99'))}</td>" if thinks else "")
                         + f"<td>{_cell(p['e2e_ms']['p99'])}</td><td>{_cell(p['per_user_output_tokens_per_s'])}</td>"
                         f"<td>{p['realtime']['fraction']:.0%}</td><td>{p['wait']['fraction']:.0%}</td>"
                         f"<td>{_cell(p['realtime']['goodput_rps'])}</td>{_server_cells(p)}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_png(runs: dict[str, dict], slo: dict, path: Path) -> bool:
    """The same charts as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(CHARTS), figsize=(5 * len(CHARTS), 3.6))
    for ax, (title, unit, value, slo_key, _) in zip(axes, CHARTS):
        for label, pts in series(runs, value).items():
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, marker="o", label=label, color=COLOURS.get(label))
        if slo.get(slo_key) is not None:
            ax.axhline(slo[slo_key], color="#c00", linestyle="--", linewidth=1, label="SLO")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{title} ({unit})", fontsize=10)
        ax.set_xlabel("concurrent users")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(directory: Path, runs: dict[str, dict], rows: list[dict] | None, slo: dict) -> dict[str, str]:
    """report.html (always) and report.png (with matplotlib) into `directory`; their paths."""
    from migrator.core.ledger import atomic_write_bytes

    written = {}
    page = directory / "report.html"
    atomic_write_bytes(page, render_html(runs, rows, slo).encode())  # 0600, as everything in the ledger
    written["html"] = str(page)
    if render_png(runs, slo, directory / "report.png"):
        written["png"] = str(directory / "report.png")
    return written
