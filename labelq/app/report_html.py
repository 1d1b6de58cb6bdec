"""The demo report as a page and a picture: formatted tables (HTML) and the plots (PNG), from ``summarise``'s data.

Every cell is formatted text (:func:`fmt`): numbers with separators and a
sensible precision, shares as percentages, nothing as a Python repr; nested
data becomes its own table (:func:`kv_rows` flattens a mapping into rows);
a long reason is cut in its cell with the whole of it as the cell's tooltip
(:func:`clipped`). The adapter versions and live agreement tables come with
the note that says what they show and why one can be empty. The page is
self-contained (the PNG embedded, no script) and fits a laptop's width
(1366 px) without horizontal scrolling; so does :func:`figure`'s picture
(eight plots in three rows, 1,200 px wide).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SHARE_KEYS = ("exact_match", "within_contract", "savings", "exact", "exact_rate", "within_rate", "precision",
              "coverage")  # shown as percentages
DASH = "\u2013"  # an en dash


def fmt(value: Any, key: str = "") -> str:
    """One table cell's text: thousands separators, 4 significant decimals at most, shares as %, a dash for none."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if key.endswith(SHARE_KEYS) and 0 <= value <= 1:
            return f"{value:.1%}"
        if key.endswith("usd") and abs(value) < 0.01:
            return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 100:
            return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:,.1f}"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {fmt(v, str(k))}" for k, v in value.items()) or DASH
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or DASH
    return str(value)


def humanise(key: str) -> str:
    """A JSON key as a column or row heading: ``labels_per_s`` -> ``labels per s``."""
    return key.replace("_", " ")


def kv_rows(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(heading, cell) rows of a mapping; a nested mapping's keys become their own rows (``outer / inner``)."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{humanise(str(key))}"
        if isinstance(value, Mapping) and value:
            rows += kv_rows(value, f"{name} / ")
        else:
            rows.append((name, fmt(value, str(key))))
    return rows


def kv_table(data: Mapping[str, Any], caption: str = "") -> str:
    """A two-column table (heading, value) of a mapping."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{html.escape(v)}</td></tr>"
                   for k, v in kv_rows(data))
    return f"<table class=kv>{_caption(caption)}{body}</table>"


def rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               headings: Mapping[str, str] | None = None, caption: str = "", cls: str = "",
               widths: Sequence[int] = ()) -> str:
    """A table with one row per mapping; ``columns`` (default: the first row's keys) in that order;
    ``widths``: each column's share of the page in percent (a fixed layout), else as wide as its content."""
    if not rows:
        return f"<p class=none>{html.escape(caption or 'nothing to show')}: none.</p>"
    columns = list(columns or rows[0].keys())
    headings = headings or {}
    head = "".join(f"<th>{html.escape(headings.get(c, humanise(c)))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c), c) for c in columns) + "</tr>" for row in rows)
    cols = "<colgroup>" + "".join(f"<col style='width:{w}%'>" for w in widths) + "</colgroup>" if widths else ""
    return f"<table class='{cls}'>{_caption(caption)}{cols}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, key: str) -> str:
    if isinstance(value, RawHtml):
        return f"<td>{value.markup}</td>"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"<td{' class=num' if number else ''}>{html.escape(fmt(value, key))}</td>"


def _caption(text: str) -> str:
    return f"<caption>{html.escape(text)}</caption>" if text else ""


class RawHtml:
    """A cell that is already escaped markup (a ``<pre>`` of a session rendering)."""

    def __init__(self, markup: str) -> None:
        self.markup = markup


def pre(text: str) -> RawHtml:
    return RawHtml(f"<pre>{html.escape(text)}</pre>")


def clipped(text: str | None, max_chars: int = 150) -> RawHtml | None:
    """A long text cut at a word before ``max_chars`` (marked with an ellipsis), the whole as its tooltip."""
    if text is None or len(text) <= max_chars:
        return None if text is None else RawHtml(html.escape(text))
    cut = text[:max_chars].rsplit(" ", 1)[0].rstrip(";,: ")
    return RawHtml(f"<span title='{html.escape(text)}'>{html.escape(cut)} \u2026</span>")


def titled(value: Any, tooltip: str | None, key: str = "") -> RawHtml:
    """A formatted value with an explanation as its tooltip (none: just the value)."""
    text = html.escape(fmt(value, key))
    return RawHtml(text if not tooltip else f"<span title='{html.escape(tooltip)}'>{text}</span>")


def adapters_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The adapter versions (``summary["adapters"]``) with the note that reads them."""
    shown = [{**r, "version": f"v{r['version']}", "gate": clipped(r["gate"]),
              "calibrated": titled(r["calibrated"], r.get("calibration_why"))} for r in rows]
    table = rows_table(
        shown, ["version", "dataset_version", "promoted", "gate", "val_exact_match", "val_cosine",
                "val_within_contract", "calibrated", "threshold", "precision", "coverage", "student_labels",
                "seconds"],
        {"dataset_version": "trained on", "gate": "the gate's reason", "val_exact_match": "val exact match",
         "val_cosine": "val cosine", "val_within_contract": "val within contract", "threshold": "confidence threshold",
         "precision": "val precision at it", "coverage": "val coverage at it",
         "student_labels": "student labels this run", "seconds": "train + evaluate (s)"},
        caption="Adapter versions", cls="adapters", widths=(5, 7, 7, 24, 6, 6, 6, 7, 7, 6, 6, 7, 6))
    empty = "" if rows else ("<p class=note>No training report in the run's store: no adapter was trained "
                             "(the teacher's seed labels never made a curated bucket, or the run stopped first).</p>")
    return table + empty + (
        "<p class=note>One row per adapter version the trainer made, oldest first, promoted or refused by the "
        "gate (its reason cut short; hover for the whole). Val: the new adapter on its bucket's val split. "
        "Confidence threshold: students escalate an answer below it to the teacher; precision and coverage are "
        "the val answers at or above it (the share right, the share of all). Not calibrated: the fixed "
        "LABELQ_STUDENT_CONFIDENCE_THRESHOLD applies (hover for why); a dash: a report from before calibration "
        "was kept. Student labels: the labels that version wrote in this run.</p>")


def live_agreement_table(section: Mapping[str, Any]) -> str:
    """The live agreement windows (``summary["live_agreement"]``) with the note that says what they are."""
    rows = [{**r, "version": f"v{r['version']}"} for r in section["rows"]]
    caption = ("Live agreement: student shadow labels against the teacher's, per adapter version "
               f"({fmt(section['window_s'])} s windows)")
    table = rows_table(rows, ["version", "window_start_s", "n", "exact_rate", "within_rate", "cosine"],
                       {"window_start_s": "window start (s)", "n": "pairs", "exact_rate": "exact match",
                        "within_rate": "within contract", "cosine": "cosine"}, caption=caption)
    return table + (
        "<p class=note>Shadow labels: after the seed phase the teacher labels a small sample of sessions (2% by "
        "default, LABELQ_ROUTING_SAMPLE_RATE); the serving student labels the same sessions too, and its answers "
        "are kept only to compare with the teacher's, never as labels. Exact match: the two answers equal after "
        "normalisation; within contract: the student's answer keeps the output contract; cosine: computed later "
        "in batches by the monitor (a dash: not yet). "
        "Window start: seconds from the run's first label, negative for a window that opened before it (windows "
        "are aligned to LABELQ_AGREEMENT_WINDOW_S, not to the run). Empty: no sampled session was labelled while "
        "an adapter served.</p>")


STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;margin:0;
  background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:24px 28px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 6px;border-bottom:1px solid #ddd;
  padding-bottom:3px}
p.lead{color:#555;margin:0 0 12px}p.note{color:#555;font-size:13.5px;margin:4px 0}
img{display:block;max-width:100%;height:auto;margin:12px 0}
table{border-collapse:collapse;margin:8px 0 12px;font-size:14px;max-width:100%}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #d6d6d6;padding:4px 9px;text-align:left;vertical-align:top}
thead th,table.kv th{background:#f2f4f7;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:0 28px}.cols>div{flex:0 1 auto;min-width:0}
table.samples{table-layout:fixed;width:100%;font-size:13px}
table.samples td,table.adapters td{overflow-wrap:break-word}
table.adapters{table-layout:fixed;width:100%;font-size:13px}
table.samples pre{margin:0;white-space:pre-wrap;overflow-wrap:break-word;font:12px/1.35 ui-monospace,
  "DejaVu Sans Mono",monospace;max-height:15em;overflow:hidden}
p.none{color:#777;font-style:italic}
"""


def page(title: str, lead: str, png: bytes, sections: Iterable[tuple[str, str]]) -> str:
    """The whole page: a title, a lead line, the plots, then (heading, markup) sections."""
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{markup}</section>" for h, markup in sections)
    return (f"<!doctype html><html lang=en><head><meta charset='utf-8'>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><main><h1>{html.escape(title)}</h1><p class=lead>{lead}</p>"
            f"<img alt='plots: outcomes, quality, cost, label lengths, agreement over time, throughput over time, "
            f"confidence calibration per adapter, live agreement over time' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>{body}</main></body></html>")


COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#937860")


def figure(summary: Mapping[str, Any]) -> bytes:
    """Eight plots in three rows (about 1,200 x 1,000 px, so the page needs no horizontal scrolling at
    1366 px): outcomes, quality, cost; label lengths, agreement with the reference and throughput over time;
    then, two to a row (their legends name versions), each adapter's confidence calibration (precision
    against coverage on its val split) and live student-teacher agreement over time. A plot without data
    says so instead of staying blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13.3, 11.2))
    grid = fig.add_gridspec(3, 6)  # six columns: three plots of two in the first rows, two of three in the last
    for col, plot in enumerate((_outcomes, _quality, _cost)):
        plot(fig.add_subplot(grid[0, 2 * col:2 * col + 2]), summary)
    for col, plot in enumerate((_lengths, _agreement, _throughput)):
        plot(fig.add_subplot(grid[1, 2 * col:2 * col + 2]), summary)
    _calibration(fig.add_subplot(grid[2, 0:3]), summary)
    _live_agreement(fig.add_subplot(grid[2, 3:6]), summary)
    fig.tight_layout(h_pad=2.0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _outcomes(ax: Any, s: Mapping[str, Any]) -> None:
    counts = {"teacher": s["labelled_teacher"], "student": s["labelled_student"], "escalated": s["escalated"],
              "dead-lettered": s["dead_lettered"], "lost": s["lost"]}
    bars = ax.bar(list(counts), list(counts.values()), color=COLOURS[:5])
    ax.bar_label(bars, labels=[f"{v:,}" for v in counts.values()], fontsize=8)
    ax.set_title("sessions by outcome")
    ax.tick_params(axis="x", labelsize=8)


def _quality(ax: Any, s: Mapping[str, Any]) -> None:
    names = ["exact_match", "cosine", "within_contract"]
    series = {"students (all labels)": s["quality"]}
    val = s["adapter"]["val"]
    if val.get("base") and val.get("adapter"):
        series = {"base (val, zero-shot)": val["base"], "adapter (val)": val["adapter"], **series}
    width = 0.8 / len(series)
    for i, (name, scores) in enumerate(series.items()):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(names))],
               [scores.get(n) or 0 for n in names], width=width, label=name, color=COLOURS[i])
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_ylim(0, 1.3)  # room for the legend above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title("quality against the reference labels")
    ax.legend(fontsize=7.5, loc="upper center", ncol=len(series), handlelength=1, columnspacing=0.8)


def _cost(ax: Any, s: Mapping[str, Any]) -> None:
    cost = s["cost"]
    values = {"teacher": cost.get("teacher_per_1k_usd") or 0, "student*": cost.get("student_per_1k_usd") or 0,
              "this run": cost.get("blended_per_1k_usd") or 0}
    bars = ax.bar(list(values), list(values.values()), color=[COLOURS[0], COLOURS[1], COLOURS[4]])
    ax.bar_label(bars, labels=[f"${v:.3g}" for v in values.values()], fontsize=8)
    savings = cost.get("savings")
    ax.set_title("USD per 1,000 labels" + ("" if savings is None else f" (saved {savings:.0%})"))
    ax.set_xlabel("* student: engine time x assumed GPU $/hour", fontsize=8)


def _lengths(ax: Any, s: Mapping[str, Any]) -> None:
    for i, series in enumerate(s["label_lengths"]["series"]):
        hist = {int(w): c for w, c in series["histogram"].items()}
        if not hist:
            continue
        total = sum(hist.values())
        xs = range(min(hist), max(hist) + 1)
        ax.step(list(xs), [hist.get(x, 0) / total for x in xs], where="mid", color=COLOURS[i % len(COLOURS)],
                label=f"{series['series']} (n={total:,})")
    ax.set_xlabel("words per label")
    ax.set_ylabel("share of labels")
    ax.set_title("label length")
    ax.legend(fontsize=8)


def _agreement(ax: Any, s: Mapping[str, Any]) -> None:
    rows = s["agreement"]["rows"]
    versions = sorted({r["version"] for r in rows}, key=lambda v: -1 if v is None else v)
    for i, version in enumerate(versions):
        mine = [r for r in rows if r["version"] == version]
        name = "base" if version is None else f"v{version}"
        xs = [r["window_start_s"] for r in mine]
        ax.plot(xs, [r["exact"] for r in mine], "o-", color=COLOURS[i % len(COLOURS)], label=f"{name} exact")
        ax.plot(xs, [r["cosine"] for r in mine], "s--", color=COLOURS[i % len(COLOURS)], label=f"{name} cosine")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"seconds from the first label ({s['agreement']['window_s']} s windows)")
    ax.set_title("student agreement with reference, per adapter")
    if versions:
        ax.legend(fontsize=8, loc="best")


def _throughput(ax: Any, s: Mapping[str, Any]) -> None:
    rows = s["throughput_over_time"]["rows"]
    for i, stage in enumerate(sorted({r["stage"] for r in rows})):
        mine = [r for r in rows if r["stage"] == stage]
        ax.step([r["window_start_s"] for r in mine], [r["labels_per_s"] for r in mine], where="post",
                color=COLOURS[i], label=stage)
    ax.set_xlabel(f"seconds from the first label ({s['throughput_over_time']['window_s']} s windows)")
    ax.set_ylabel("labels per second")
    ax.set_title("throughput per stage")
    if rows:
        ax.legend(fontsize=8)


def _nothing(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#777", transform=ax.transAxes)


def _calibration(ax: Any, s: Mapping[str, Any]) -> None:
    rows = [r for r in s.get("adapters", []) if r.get("curve")]
    targets = sorted({r["target_precision"] for r in rows if r.get("target_precision") is not None})
    for i, row in enumerate(rows):
        colour = COLOURS[i % len(COLOURS)]
        curve = sorted(row["curve"], key=lambda p: p["coverage"])
        state = "" if row["promoted"] else " (refused)"
        chosen = f"threshold {row['threshold']:.3g}" if row.get("calibrated") else "not calibrated"
        ax.plot([p["coverage"] for p in curve], [p["precision"] for p in curve], "-" if row["promoted"] else ":",
                color=colour, label=f"v{row['version']}{state}: {chosen}")
        if row.get("calibrated") and row.get("precision") is not None:  # the chosen threshold's point
            ax.plot([row["coverage"]], [row["precision"]], "o", color=colour, markersize=7)
    for target in targets:
        ax.axhline(target, color="#555", linestyle="--", linewidth=1, label=f"target precision {target:.2f}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("coverage: share of val answers at or above a confidence threshold")
    ax.set_ylabel("precision: share of them right")
    ax.set_title("confidence calibration per adapter (val split)")
    if rows:
        ax.legend(fontsize=8, loc="lower left")
    else:
        _nothing(ax, "no calibration curve in the adapters' training reports")


def _live_agreement(ax: Any, s: Mapping[str, Any]) -> None:
    section = s.get("live_agreement") or {"window_s": None, "rows": []}
    rows = [r for r in section["rows"] if r.get("window_start_s") is not None]
    versions = sorted({r["version"] for r in rows})
    for i, version in enumerate(versions):
        mine = [r for r in rows if r["version"] == version]
        xs = [r["window_start_s"] for r in mine]
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(xs, [_nan(r["exact_rate"]) for r in mine], "o-", color=colour, label=f"v{version} exact")
        ax.plot(xs, [_nan(r["cosine"]) for r in mine], "s--", color=colour, label=f"v{version} cosine")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"seconds from the first label ({fmt(section['window_s'])} s windows)")
    ax.set_title("live agreement: student shadow labels vs the teacher's")
    if versions:
        ax.legend(fontsize=8, loc="lower left")
    else:
        _nothing(ax, "no shadow pairs: no sampled session was labelled while an adapter served")


def _nan(value: float | None) -> float:
    """None (no figure yet) as a gap in a line."""
    return math.nan if value is None else value
