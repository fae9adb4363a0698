"""The export report as one self-contained HTML page (`export-model --report`).

The per-layer table, the totals, the warnings and two plots: the arena bytes
live during each layer (RAM) and the weight bytes of each layer (flash).  The
plots are PNGs embedded as base64 data URIs, so the page has no external
reference; there is no timestamp, so the same export gives the same file.
"""
from __future__ import annotations

import base64
import io
from html import escape

from .report import Report
from .validate import fmt_shape

STYLE = """
body { font: 14px/1.4 sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #e8eef6; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.peak td { background: #fff1e0; } .warn { color: #a33; } img { display: block; margin: 1em 0; }
"""
COLUMNS = ("layer", "type", "output", "params", "MACs", "weight B", "arena live B")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(n_layers: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    fig = Figure(figsize=(min(4 + 0.35 * n_layers, 16), 4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def arena_plot(report: Report) -> str:
    """Step plot of the arena bytes live during each layer, the peak marked."""
    live = [r.live_bytes for r in report.layers]
    fig = _figure(len(live))
    ax = fig.add_subplot()
    xs = range(len(live))
    ax.step(xs, live, where="mid", color="tab:blue")
    ax.fill_between(xs, live, step="mid", alpha=0.25, color="tab:blue")
    if live:
        k = max(xs, key=live.__getitem__)
        ax.plot([k], [live[k]], "o", color="tab:red")
        ax.annotate(f"peak {live[k]} B ({report.layers[k].name})", (k, live[k]),
                    textcoords="offset points", xytext=(0, 6), ha="center", color="tab:red")
        ax.set_ylim(0, max(live[k], 1) * 1.2)
    ax.axhline(report.arena_bytes, ls="--", color="gray", lw=1)
    _label(ax, report, "arena bytes live", f"RAM: arena {report.arena_bytes} B (dashed)")
    return _png(fig)


def flash_plot(report: Report) -> str:
    """Bar chart of the weight bytes (flash) of each layer."""
    fig = _figure(len(report.layers))
    ax = fig.add_subplot()
    ax.bar(range(len(report.layers)), [r.weight_bytes for r in report.layers],
           color="tab:green")
    _label(ax, report, "weight bytes", f"flash: {report.weight_bytes} B of weights")
    return _png(fig)


def _label(ax, report: Report, ylabel: str, title: str) -> None:
    ax.set_xticks(range(len(report.layers)), [r.name for r in report.layers],
                  rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def verify_section(verified) -> str:
    """The --verify results: the whole-model metrics and, for int8, the
    per-layer table (type marks int16 tensors, whose steps are finer)."""
    if not verified:
        return ""
    keys = ("max_abs", "rmse", "cosine", "top1_agreement", "max_steps", "within_2_steps",
            "qemu_bit_exact", "qemu_mismatches")
    cells = "".join(f"<tr><th>{k}</th><td class=\"n\">{escape(_num(verified[k]))}</td></tr>"
                    for k in keys if k in verified)
    head = (f"<h2>Verification: C on {escape(str(verified.get('where')))} vs Keras, "
            f"{verified.get('samples')} samples</h2>\n<table id=\"verify\">{cells}</table>")
    rows = verified.get("layers") or []
    if not rows:
        return head
    cols = ("layer", "op", "type", "max|err|", "RMSE", "cosine", "max steps")
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (r["layer"], r["op"], r["dtype"]))
        + "".join(f'<td class="n">{escape(_num(r.get(k, "-")))}</td>'
                  for k in ("max_abs", "rmse", "cosine", "max_steps")) + "</tr>"
        for r in rows)
    return (head + "\n<h3>Per layer, C int8 vs the float model, in each tensor's own steps "
            "(int16 steps are 256 times finer)</h3>\n<table id=\"verify-layers\"><tr>"
            + "".join(f"<th>{c}</th>" for c in cols) + f"</tr>{body}</table>")


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render(report: Report, verified=None) -> str:
    import matplotlib
    with matplotlib.rc_context({"text.parse_math": False}):  # a layer "a$b" is text, not TeX
        plots = arena_plot(report), flash_plot(report)
    peak = max((r.live_bytes for r in report.layers), default=None)
    rows = []
    for r in report.layers:
        cells = (r.name, r.keras_class, fmt_shape(r.output_shape), r.params, r.macs,
                 r.weight_bytes, r.live_bytes)
        tds = "".join(f'<td class="n">{c}</td>' if isinstance(c, int) else f"<td>{escape(c)}</td>"
                      for c in cells)
        rows.append(f'<tr class="peak">{tds}</tr>' if r.live_bytes == peak else f"<tr>{tds}</tr>")
    warnings = "".join(f'<li class="warn">{escape(w)}</li>' for w in report.warnings)
    title = escape(f"{report.model_name}: {report.dtype} for {report.target}")
    peak_line = ("<p>arena peak while live: " + escape(", ".join(report.peak_tensors)) + "</p>"
                 if report.peak_tensors else "")
    plan_items = "".join(f"<li>{escape(n)}</li>" for n in report.planner)
    plan_line = f'<ul id="arena-plan">{plan_items}</ul>' if plan_items else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<p id="totals">{report.params} params, {report.macs} MACs,
{report.weight_bytes} B weights (flash), {report.arena_bytes} B arena (RAM),
prefix <code>{escape(report.prefix)}</code></p>
{peak_line}
{plan_line}
<h2>Warnings</h2>
{f"<ul>{warnings}</ul>" if warnings else "<p>none</p>"}
<h2>Layers</h2>
<table id="layers">
<tr>{"".join(f"<th>{c}</th>" for c in COLUMNS)}</tr>
{chr(10).join(rows)}
</table>
<h2>RAM: arena bytes live during each layer</h2>
<img id="arena-plot" alt="arena bytes live per layer" src="{plots[0]}">
<h2>Flash: weight bytes per layer</h2>
<img id="flash-plot" alt="weight bytes per layer" src="{plots[1]}">
{verify_section(verified)}
</body></html>
"""


def write(report: Report, path, verified=None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(report, verified))
