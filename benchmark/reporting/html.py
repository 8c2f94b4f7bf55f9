"""Self-contained HTML report (reports/index.html): sortable leaderboard, bar charts, figures, model cards, run record."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from html import escape
from pathlib import Path

from benchmark.cache import atomic_write_text
from benchmark.grading.properties import ARROW, FALSE_ALARMS, PROPERTIES
from benchmark.grading.verdict import COLLAPSED, ERROR, FAIL, INCONCLUSIVE, INFO, NA, PASS, UNDECIDED, Cell, cell_id
from benchmark.models.card import SHORTCUT_TARGETS, targets_line
from benchmark.reporting.architectures import compare, sibling_records, summary_line
from benchmark.reporting.heatmap import LEGEND, colour, heatmap
from benchmark.reporting.ranking import (
    RANKED_BY,
    RANKING,
    detection_areas,
    effect_text,
    is_control,
    summarise,
)
from benchmark.reporting.redundancy import identical_methods, metric_pairs
from benchmark.reporting.report import (
    ARMS_NOTE,
    VERDICTS,
    arms_rows,
    cells_from_record,
    read_sweep,
    seeds_line,
    validity_rows,
    write_reports,
)
from benchmark.reporting.sweep_report import READING, level_area, limit_text, render_markdown

FIGURE_GLOB = "flipped_examples*.png"
CARD_FIELDS = ("arch_name", "clean_accuracy", "cat_accuracy", "unstamped_dog_accuracy", "stamped_accuracy",
               "flip_rate", "n_flipped", "mean_p_dog_on_flips", "n_parameters", "device", "train_seconds")
# Traffic lights for the three graded outcomes (INCONCLUSIVE amber, between pass and fail); UNDECIDED (no
# informative metric) is a darker grey than N/A.
COLOURS = {PASS: "#1a7f37", FAIL: "#cf222e", INCONCLUSIVE: "#bf8700", ERROR: "#8250df", NA: "#8c959f",
           UNDECIDED: "#57606a", INFO: "#0969da", COLLAPSED: "#953800"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#1f2328}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #d0d7de}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa}table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
details.msg summary{cursor:pointer;color:#0969da}
.v{font-weight:600;border-radius:3px;padding:0 .3em;color:#fff}
.v-PASS{background:#1a7f37}.v-FAIL{background:#cf222e}.v-INCONCLUSIVE{background:#bf8700}.v-ERROR{background:#8250df}
.v-NA{background:#8c959f}.v-UNDECIDED{background:#57606a}.v-INFO{background:#0969da}.v-COLLAPSED{background:#953800}
.msg{color:#57606a;max-width:40em;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #d0d7de}
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #d0d7de;padding:.5em}
.legend span{margin-right:1em}
td.changed{outline:2px solid #cf222e;outline-offset:-2px}
pre{background:#f6f8fa;padding:.5em;overflow:auto;font-size:.8em}
table.heatmap{font-size:.72em}table.heatmap td{text-align:center;padding:.15em .3em;min-width:2.2em}
table.heatmap th.m{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:500;white-space:nowrap}
table.heatmap th.m.u{text-decoration:line-through;color:#8c959f}table.heatmap td.name{text-align:left}
details.big>summary{cursor:pointer;font-weight:600;margin:.5em 0}.filter{margin:.3em 0}
h1{margin:.2em 0 .3em}p.meta{margin:.2em 0;color:#57606a;font-size:.85em}
p#legend{margin:.4em 0;font-size:.85em;line-height:1.35}table#ranked td{white-space:nowrap}
.one-seed{color:#bf8700;font-style:italic}#reading-fail{font-size:.9em}#reading-fail li{margin:.2em 0}
"""

# Sorts a table by the clicked column (numbers numerically, text alphabetically; data-sort wins over text),
# then marks the page ready and counts decoded images so a headless browser can check the page works.
JS = """
(function(){
  function key(td){var v=td.getAttribute('data-sort');if(v===null){v=td.textContent.trim();}
    var n=parseFloat(v);return (v!==''&&!isNaN(n)&&isFinite(v))?[0,n]:[1,v.toLowerCase()];}
  function cmp(a,b){if(a[0]!==b[0]){return a[0]-b[0];}return a[1]<b[1]?-1:(a[1]>b[1]?1:0);}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads,function(th,col){
      th.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r1,r2){var c=cmp(key(r1.cells[col]),key(r2.cells[col]));return asc?c:-c;});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var filter=document.getElementById('cells-filter');
  if(filter){filter.addEventListener('input',function(){var q=filter.value.toLowerCase();
    document.querySelectorAll('#cells tbody tr').forEach(function(r){
      r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
  document.body.setAttribute('data-sortable-tables',String(document.querySelectorAll('table.sortable').length));
  document.body.setAttribute('data-ready','1');
  window.addEventListener('load',function(){
    var ok=0;document.querySelectorAll('img').forEach(function(img){if(img.complete&&img.naturalWidth>0){ok++;}});
    document.body.setAttribute('data-images-loaded',String(ok));
    // What the first screen shows without scrolling: the legend, and how many ranked rows lie wholly inside it.
    var legend=document.getElementById('legend'),ranked=document.getElementById('ranked'),h=window.innerHeight;
    if(legend&&ranked){var n=0;Array.prototype.forEach.call(ranked.tBodies[0].rows,function(r){
        if(r.getBoundingClientRect().bottom<=h){n++;}});
      document.body.setAttribute('data-first-screen-rows',String(n));
      document.body.setAttribute('data-legend-on-screen',String(legend.getBoundingClientRect().bottom<=h));
      document.body.setAttribute('data-viewport',window.innerWidth+'x'+h);}
  });
})();
"""


def _e(value) -> str:
    return escape(str(value), quote=True)


def _badge(outcome: str) -> str:
    cls = "NA" if outcome == NA else outcome
    return f'<span class="v v-{_e(cls)}">{_e(outcome)}</span>'


def _num(value, digits: int = 3) -> str:
    if value is None:
        return '<td class="num" data-sort="">—</td>'
    return f'<td class="num" data-sort="{float(value)!r}">{float(value):.{digits}f}</td>'


def _table(headers: list[str], rows: list[str], *, sortable: bool = True, table_id: str = "") -> str:
    ident = f' id="{_e(table_id)}"' if table_id else ""
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table{ident}{cls}><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _rank_td(rank: int | None, label: str) -> str:
    return f'<td class="num" data-sort="{"" if rank is None else rank}">{_e(label)}</td>'


def _effect_td(e: dict | None) -> str:
    return f'<td class="num" data-sort="{"" if e is None else repr(e["mean"])}">{_e(effect_text(e))}</td>'


def _short(suite: str) -> str:
    """A property's column label: its key without the 'watermark_' prefix, in words (the full name on hover)."""
    return suite.removeprefix("watermark_").replace("_", " ")


def _gates(summary: dict) -> list[str]:
    """The graded properties shown as badges (informational ones never pass or fail)."""
    return [s for s in summary["suites"] if not (s in PROPERTIES and PROPERTIES[s].informational)]


def _false_alarms(cells: list[Cell], method: str) -> str:
    """'0/3 · 1/3': of the method's deciding cells with false-alarm controls, how many do NOT beat its own map on the
    control model, and on the absent model ('—' when none was compared)."""
    parts = []
    for arm in FALSE_ALARMS.values():
        compared = [c for c in cells if c.method == method and c.decides and arm in c.comparisons]
        alarms = sum(not c.comparisons[arm]["beaten"] for c in compared)
        parts.append(f"{alarms}/{len(compared)}" if compared else "—")
    return " · ".join(parts)


def seed_text(record: dict, suite: str, method: str) -> tuple[str, bool]:
    """('k/K seeds' that pass the property on their own, or '1 seed' / 'K seeds pooled' without a per-seed record;
    whether the verdict rests on one seed)."""
    st = ((record.get("stability") or {}).get(suite) or {}).get(method)
    if st and st.get("seeds", 1) > 1 and "seeds_pass" in st:
        loso = f", leave-one-seed-out {st['loso_agree']}/{st['seeds']}" if st.get("loso_agree") is not None else ""
        return f"{st['seeds_pass']}/{st['seeds']} seeds{loso}", False
    k = len((record.get("run") or {}).get("model_seeds") or [0])
    return ("1 seed", True) if st or k == 1 else (f"{k} seeds pooled", False)


def _seeds_td(record: dict, suite: str, method: str) -> str:
    text, one = seed_text(record, suite, method)
    cls = ' class="one-seed" title="this verdict rests on one training run"' if one else ""
    return f"<td{cls}>{_e(text)}</td>"


def _badges(record: dict, row: dict, gates: list[str]) -> str:
    """One badge per graded property; hovering gives its seed agreement."""
    out = []
    for s in gates:
        seeds, _ = seed_text(record, s, row["method"])
        out.append(f'<td data-sort="{_e(row[s])}" title="{_e(PROPERTIES[s].name if s in PROPERTIES else s)}: '
                   f'{_e(seeds)}">{_badge(row[s])}</td>')
    return "".join(out)


def _limit_td(sweep: dict | None, method: str) -> str:
    if sweep is None:
        return ""
    limits = sweep["detection_limits"]
    area = level_area(sweep, limits.get(method))
    text = limit_text(limits, method, sweep.get("detection_limit_ranges"))
    return f'<td data-sort="{"" if area is None else repr(area)}">{_e(text)}</td>'


def _ranked(record: dict, cells: list[Cell], summary: dict, sweep: dict | None, *, controls: bool) -> str:
    """The overall ranking as a badge table: the real methods (or, with ``controls``, the control maps)."""
    gates = _gates(summary)
    rows = []
    for r in summary["overall"]:
        if is_control(r["method"]) != controls:
            continue
        effect = summary["effects"].get(RANKED_BY, {}).get(r["method"])
        rows.append(f'<tr>{_rank_td(r["rank"], r["rank_label"])}<td>{_e(r["method"])}</td>'
                    f'{_badges(record, r, gates)}{_effect_td(effect)}{_limit_td(sweep, r["method"])}'
                    f'<td class="num">{_e(_false_alarms(cells, r["method"]))}</td>'
                    f'{_seeds_td(record, RANKED_BY, r["method"])}</tr>')
    headers = ["rank", "method", *map(_short, gates), "localisation effect [95% CI]",
               *(["detection limit"] if sweep is not None else []), "false alarms: control · absent",
               "seed agreement"]
    return _table(headers, rows, table_id="controls" if controls else "ranked")


def _legend(summary: dict, sweep: dict | None) -> str:
    """The paragraph above the ranked table: what the order means and how to read a row."""
    prop = PROPERTIES[RANKED_BY]
    limit = ("within a shared rank, the method with the smaller detection limit (it still finds a weaker mark in the "
             "strength sweep) comes first, then the larger mean; the limit only orders what the CI cannot, since it "
             "is one level with no CI and moves between builds more than the effect does"
             if sweep is not None else "within a shared rank, the larger mean comes first (no strength sweep in "
             "this folder, so no detection limit)")
    gates = ", ".join(_short(s) for s in _gates(summary) if s != RANKED_BY)
    return (f'<p id="legend"><b>Which method can you trust to find a shortcut?</b> Real attribution methods, '
            f"ranked by their localisation effect: how well each map points at the planted watermark on the "
            f"predictions it flipped (cat to dog), as skill ({prop.negative} = 0, {prop.positive} = 1) with its 95% "
            f"CI. This is what the planted shortcut makes checkable. Methods share a rank (=k) when their CIs "
            f"overlap; {limit}. The other properties ({_e(gates)}) are pass/fail gates beside the rank, never "
            "averaged into it: a method to trust passes them too. PASS and FAIL: the CI lies wholly on one side of "
            "the pass level (and every control is beaten, or one beats the method); INCONCLUSIVE: a CI straddles, "
            "so this run cannot tell. False alarms: metrics on which the method does not beat its own map of the "
            "control model (mark without label information) and of the absent model (never saw a mark); a method "
            "that also finds the mark there finds salience, not the shortcut. Seed agreement: how many training "
            "seeds pass localisation on their own; <i>1 seed</i> marks a verdict that rests on one training run. "
            "Controls are listed apart, below.</p>")


READING_FAIL = (
    ("Why it failed", "open the cell's message (the <i>why</i> in the every-cell table, or hover a heatmap tile): "
     "it names the control that beat the method or was not beaten, or gives the skill CI against the pass level."),
    ("How far to trust it", "a FAIL whose CI lies well below the pass level, on every seed, is solid; one just under "
     "it, resting on one seed, can flip on a retrain. An INCONCLUSIVE is not a FAIL: its CI straddles."),
    ("What to do next", "for a near miss or an INCONCLUSIVE, rerun with more training seeds "
     "(<code>--bench-model-seeds</code> above the run's count), which narrow the interval more than images, before "
     "concluding; for "
     "a beaten method, look at the flipped examples to see where its map goes; a false alarm means the map follows "
     "the mark's salience, so do not use the method to find shortcuts."),
)


def _reading_fail() -> str:
    items = "".join(f"<li><b>{_e(head)}</b>: {text}</li>" for head, text in READING_FAIL)
    return f'<section id="reading-fail"><h3>Reading a FAIL</h3><ol>{items}</ol></section>'


def _sweep(out_dir: Path | None) -> tuple[dict | None, str]:
    """(the sweep result found next to the report, its HTML section)."""

    sweep = read_sweep(out_dir)
    if sweep is None:
        return None, ("<p>No strength sweep in this folder (<code>pytest suites/ -m sweep</code> runs it; its "
                      "detection limits then join the overall table).</p>")
    levels, limits = sweep.get("levels") or [], sweep["detection_limits"]
    png = Path(out_dir) / "sweep.png"
    figure = ""
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        figure = (f'<figure><img id="sweep-curves" alt="localisation skill vs watermark size" '
                  f'src="data:image/png;base64,{data}"><figcaption>Localisation skill (0 = Random, 1 = Oracle) '
                  "against the mark's footprint, one line per method with its 95% CI band.</figcaption></figure>")
    rows = [f"<tr><td>{_e(lv['label'])}</td><td class=\"num\">{lv['footprint']:.2%}</td><td>"
            + _e("included" if lv["learned"] else "EXCLUDED: " + lv["excluded"]) + "</td></tr>" for lv in levels]
    head = _table(["level", "footprint", "included"], rows, table_id="sweep-levels")
    md = render_markdown(sweep)
    n_limited = sum(v is not None for v in limits.values())
    return sweep, (f"<p>{_e(sweep.get('rule', ''))} {n_limited} of {len(limits)} methods have a detection "
                   f"limit.</p><p>{_e(READING)}</p>{figure}{head}<details><summary>Skill per level (Markdown)</summary><pre>{_e(md)}</pre>"
                   "</details>")


def _arms(cells: list[Cell], summary: dict) -> str:
    out = []
    for s in summary["suites"]:
        prop = PROPERTIES.get(s)
        if prop is None or not prop.false_alarm:
            continue
        metrics, rows = arms_rows(cells, s, summary["order"][s])
        out += [f"<h3>{_e(prop.name)}</h3>", f"<p>{_e(ARMS_NOTE)}</p>",
                _table(["method", *metrics], ["<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows],
                       table_id=f"arms-{s}")]
    return "\n".join(out)


def _property_ranks(summary: dict) -> str:
    out = []
    for s in summary["suites"]:
        prop = PROPERTIES.get(s)
        rows = [f'<tr>{_rank_td(summary["ranks"][s][m], summary["rank_labels"][s][m])}<td>{_e(m)}</td>'
                f'<td data-sort="{_e(summary["verdicts"][s][m])}">{_badge(summary["verdicts"][s][m])}</td>'
                f'{_effect_td(summary["effects"][s][m])}</tr>' for m in summary["order"][s]]
        anchors = f" (skill: {prop.negative} = 0, {prop.positive} = 1)" if prop else ""
        out += [f"<h3>{_e(prop.name if prop else s)}{_e(anchors)}</h3>",
                _table(["rank", "method", "verdict", "effect [95% CI]"], rows, table_id=f"ranks-{s}")]
    return "\n".join(out)


def _cells_table(cells: list[Cell], survivors: set) -> str:
    rows = []
    for c in sorted(cells, key=lambda c: (c.suite, c.metric, c.method)):
        s = c.score or {}
        ci = (f'<td class="num" data-sort="{s["ci_high"] - s["ci_low"]!r}">± {(s["ci_high"] - s["ci_low"]) / 2:.3f} '
              f'[{s["ci_low"]:.3f}, {s["ci_high"]:.3f}]</td>') if s else '<td data-sort="">—</td>'
        informative = {True: "yes", False: "NO", None: "—"}[c.informative]
        rows.append(
            f'<tr><td title="{_e(c.property)}">{_e(c.suite)}</td><td>{_e(c.metric)}</td><td>{_e(c.method)}</td>'
            f'<td data-sort="{_e(c.outcome)}">{_badge(c.outcome)}{_bh_note(c, survivors)}</td>{_num(s.get("mean"))}{ci}'
            f'{_num(None if c.skill is None else c.skill["mean"])}'
            f'<td class="num" data-sort="{"" if c.threshold is None else repr(float(c.threshold))}">'
            f'{"—" if c.threshold is None else f"{c.threshold:.3g}"}</td>'
            f'<td data-sort="{_e(c.direction)}">{_e(ARROW.get(c.direction, c.direction))} '
            f'{_e(c.direction)}</td><td>{informative}</td>'
            f'<td><details class="msg"><summary>why</summary>{_e(c.message)}</details></td></tr>')
    return _table(["suite", "metric", "method", "verdict", "score (mean)", "95% CI", "skill", "pass level", "direction",
                   "informative", "message"], rows, table_id="cells")


def _heatmap(cells: list[Cell], summary: dict) -> str:
    h = heatmap(cells, summary)
    groups = "".join(f'<th colspan="{sum(1 for c in h.columns if c[0] == s)}">{_e(PROPERTIES[s].name if s in PROPERTIES else s)}</th>'
                     for s in dict.fromkeys(c[0] for c in h.columns))
    unsure = ' title="uninformative in this run"'
    heads = "".join(f'<th class="m u"{unsure}>{_e(col[1])}</th>' if col in h.uninformative else
                    f'<th class="m">{_e(col[1])}</th>' for col in h.columns)
    rows = []
    for method in h.methods:
        tds = []
        for s, m in h.columns:
            t = h.tiles.get((s, m, method))
            if t is None:
                tds.append("<td></td>")
                continue
            skill = "" if t.skill is None else f"skill {t.skill:.2f}: "
            tds.append(f'<td style="background:{colour(t.skill)}" title="{_e(skill + t.message)}">{_e(t.mark)}</td>')
        rows.append(f'<tr><td class="name">{_e(method)}</td>{"".join(tds)}</tr>')
    return (f'<table id="heatmap" class="heatmap"><thead><tr><th></th>{groups}</tr><tr><th>method</th>{heads}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table><p class="legend">{_e(LEGEND)} Rows follow the overall '
            "ranking; hover a cell for its numbers. The same figure: heatmap.png.</p>")


def _bh_note(c: Cell, survivors: set) -> str:
    lost = c.outcome == PASS and c.decides and cell_id(c) not in survivors
    return ' <small title="does not survive the Benjamini-Hochberg step of its property">not after BH</small>' \
        if lost else ""


def _chart(metric: str, direction: str, threshold: float | None, cells: list[Cell]) -> str:
    """A horizontal bar chart (inline SVG): one bar per method with its 95% CI and the threshold line."""
    scored = sorted((c for c in cells if c.score), key=lambda c: (-c.score["mean"] if direction == "higher"
                                                                  else c.score["mean"], c.method))
    unscored = sorted((c for c in cells if not c.score), key=lambda c: c.method)
    values = [0.0] + ([] if threshold is None else [threshold]) + [v for c in scored for v in (c.score["ci_low"], c.score["ci_high"])]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    label_w, plot_w, row_h, top = 150, 300, 14, 30
    height = top + row_h * (len(scored) + len(unscored)) + 10

    def x(v: float) -> float:
        return label_w + (v - lo) / span * plot_w

    parts = [f'<svg role="img" aria-label="{_e(metric)}" width="{label_w + plot_w + 70}" height="{height}" '
             f'viewBox="0 0 {label_w + plot_w + 70} {height}" font-size="10" font-family="sans-serif">',
             f'<text x="0" y="12" font-weight="bold">{_e(metric)} {_e(ARROW.get(direction, ""))} '
             f'({_e(direction)} is better)</text>',
             f'<text x="{label_w}" y="26" fill="#57606a">{lo:.3g}</text>'
             f'<text x="{label_w + plot_w}" y="26" text-anchor="end" fill="#57606a">{hi:.3g}</text>']
    for i, c in enumerate(scored + unscored):
        y = top + i * row_h
        parts.append(f'<text x="{label_w - 4}" y="{y + 10}" text-anchor="end">{_e(c.method)}</text>')
        colour = COLOURS.get(c.outcome, "#57606a")
        if not c.score:
            parts.append(f'<text x="{label_w + 2}" y="{y + 10}" fill="{colour}">{_e(c.outcome)}</text>')
            continue
        s = c.score
        x0, xm = x(0.0), x(s["mean"])
        parts.append(f'<rect x="{min(x0, xm):.1f}" y="{y + 2}" width="{abs(xm - x0):.1f}" height="{row_h - 4}" '
                     f'fill="{colour}" fill-opacity="0.6"><title>{_e(c.method)}: {s["mean"]:.3f} '
                     f'[{s["ci_low"]:.3f}, {s["ci_high"]:.3f}] {_e(c.outcome)}</title></rect>')
        parts.append(f'<line x1="{x(s["ci_low"]):.1f}" x2="{x(s["ci_high"]):.1f}" y1="{y + row_h / 2}" '
                     f'y2="{y + row_h / 2}" stroke="#1f2328" stroke-width="1.2"/>')
        parts.append(f'<text x="{label_w + plot_w + 4}" y="{y + 10}">{s["mean"]:.3f}</text>')
    if threshold is not None:
        tx = x(threshold)
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 2}" y2="{height - 8}" stroke="#0969da" '
                     f'stroke-dasharray="4 2"><title>pass level {threshold:.3g}</title></line>')
    parts.append("</svg>")
    return '<div class="chart">' + "".join(parts) + "</div>"


def _charts(cells: list[Cell], suites: list[str]) -> str:
    by = defaultdict(list)
    for c in cells:
        by[(c.suite, c.metric)].append(c)
    out = ['<p class="legend">Bars: mean score; black whisker: 95% bootstrap CI; dashed blue line: pass level in this run. '
           + "".join(f'<span style="color:{col}">■ {_e(k)}</span>' for k, col in COLOURS.items()) + "</p>"]
    for s in suites:
        prop = PROPERTIES.get(s)
        name = prop.name if prop else s
        out.append(f"<h3>{_e(name)}</h3><div class=\"charts\">")
        metrics = [m.name for m in prop.metrics] if prop else sorted({c.metric for c in cells if c.suite == s})
        for m in metrics:
            if (s, m) in by:
                first = by[(s, m)][0]
                level = next((c.threshold for c in by[(s, m)] if c.threshold is not None), None)
                out.append(_chart(m, first.direction, level, by[(s, m)]))
        out.append("</div>")
    return "\n".join(out)


def _redundancy(cells: list[Cell]) -> str:
    rows = []
    for p in metric_pairs(cells):
        rho = "—" if p["spearman"] != p["spearman"] else f"{p['spearman']:.3f}"
        flag = "REDUNDANT" if p["redundant"] else ""
        rows.append(f"<tr><td>{_e(p['property'])}</td><td>{_e(p['a'])}</td><td>{_e(p['b'])}</td>"
                    f'<td class="num">{rho}</td><td>{flag}</td></tr>')
    same = "".join(f"<li>{_e(p['a'])} ≡ {_e(p['b'])} (equal on {p['agree']} of {p['cells']} metrics)</li>"
                   for p in identical_methods(cells)) or "<li>none</li>"
    return (_table(["property", "metric", "metric", "Spearman of per-method means", "flag"], rows, table_id="redundancy")
            + f"<p>Methods with the same per-image scores (very likely the same maps):</p><ul>{same}</ul>")


def _validity(cells: list[Cell]) -> str:
    rows = [f"<tr><td>{_e(prop)}</td><td>{_e(metric)}</td><td>{ok}</td><td class=\"msg\">{_e(evidence)}</td></tr>"
            for prop, metric, ok, evidence in validity_rows(cells)]
    return _table(["property", "metric", "informative", "evidence"], rows, table_id="validity")


def _cards(run: dict) -> str:
    models = run.get("models") or {}
    if not models:
        return "<p>No model cards in this record.</p>"
    splits = sorted(models)
    rows = []
    for f in CARD_FIELDS:
        vals = []
        for sp in splits:
            v = models[sp].get(f)
            vals.append(f'<td class="num">{v:.3f}</td>' if isinstance(v, float) else f"<td>{_e(v)}</td>")
        rows.append(f"<tr><th>{_e(f)}</th>{''.join(vals)}</tr>")
    head = "".join(f"<th>{_e(sp)} model</th>" for sp in splits)
    mark = (run.get("data") or {}).get("watermark") or {}
    where = (f" The mark covers {mark['footprint_fraction']:.1%} of the image ({mark['footprint_px'][1]}×"
             f"{mark['footprint_px'][0]} px); position: {mark['position_distribution']}." if mark else "")
    biased = {name: card for name, card in models.items() if name.split("-seed")[0] == "biased" and "flip_rate" in card}
    wanted = ", ".join(t[3] for t in SHORTCUT_TARGETS)
    targets = "".join(f" {name.capitalize()} model, {targets_line(card)} ({wanted})." for name, card in sorted(biased.items()))
    return (f'<table id="model-cards"><thead><tr><th></th>{head}</tr></thead><tbody>' + "".join(rows)
            + "</tbody></table><p>The biased model was trained where the watermark marks ~60% of dogs and no cat; "
              "the control model where it carries no label information; the absent model never saw it."
            + _e(where + targets) + "</p>")


def _run_table(run: dict) -> str:
    profile = run.get("profile") or {}
    fields = [("profile", f"{profile.get('name')} ({run.get('profile_reason', '')})"), ("seed", run.get("seed")),
              ("training seeds", ", ".join(map(str, run.get("model_seeds") or [run.get("seed")]))),
              ("git", run.get("git")), ("device", run.get("device")), ("started", run.get("started")),
              ("wall seconds", run.get("wall_seconds")), ("xdist workers", run.get("workers"))]
    if "inference" in run:
        inference = run["inference"]
        fields.append(("inference", f"channels-last {'on' if inference.get('channels_last') else 'off'}, fused no-grad "
                                    f"passes {'on' if inference.get('fused_inference') else 'off'}"))
        fields += [("fused fallback", text) for text in inference.get("fused_fallbacks", [])]
    fields += [(f"version: {k}", v) for k, v in sorted((run.get("versions") or {}).items())]
    fields += [(f"machine: {k}", v) for k, v in sorted((run.get("machine") or {}).items())]
    for sh in run.get("shards") or []:
        fields.append((f"shard {sh.get('shard') or sh.get('record')}",
                       f"{sh.get('device')}, started {sh.get('started')}, {len(sh.get('methods', []))} methods"))
    rows = [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in fields]
    details = json.dumps({k: run.get(k) for k in ("options", "profile", "data") if k in run}, indent=2, sort_keys=True)
    return (_table(["field", "value"], rows, sortable=False, table_id="run-record")
            + f"<details><summary>options, profile and data manifest</summary><pre>{_e(details)}</pre></details>")


def _figures(out_dir: Path) -> str:
    paths = sorted(Path(out_dir).glob(FIGURE_GLOB))
    if not paths:
        return "<p>No figure of flipped examples in this folder (it is drawn by a `pytest suites/` run).</p>"
    out = []
    for p in paths:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{_e(p.stem)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{_e(p.name)}: flipped cats (clean, stamped, mask) and every method's |map| "
                   "of 'dog' on the biased model.</figcaption></figure>")
    return "\n".join(out)


def _first_screen(record: dict, cells: list[Cell], summary: dict, sweep: dict | None) -> list[str]:
    """Title, legend, the ranked table of real methods and how to read a FAIL; then the controls and the heatmap."""
    run = record.get("run", {})
    profile = (run.get("profile") or {}).get("name", "?")
    return [
        f"<h1>{_e(_title(run))}</h1>",
        f'<p class="meta">Profile {_e(profile)}; git <code>{_e(run.get("git", "?"))}</code>, device '
        f"{_e(run.get('device', '?'))}, started {_e(run.get('started', '?'))}; {len({c.method for c in cells})} "
        f"methods, {len(cells)} cells; training seeds "
        f"{_e(', '.join(map(str, run.get('model_seeds') or [run.get('seed', 0)])))}.</p>",
        _legend(summary, sweep), _ranked(record, cells, summary, sweep, controls=False), _reading_fail(),
        "<h2>Controls (constructed maps, not ranked)</h2>",
        "<p>The maps every method is measured against: negative controls lack a property, positive controls have "
        "it. They anchor the skill scale and are listed here so they never take a place in the ranking.</p>",
        _ranked(record, cells, summary, sweep, controls=True),
        "<h2>At a glance: skill per method and metric</h2>", _heatmap(cells, summary),
    ]


def _architectures(record: dict, out_dir: Path | None) -> list[str]:
    """Each other architecture's verdicts beside this run's, with the rank correlation (none: nothing shown)."""
    out = []
    for _, other in sibling_records(out_dir, record) if out_dir is not None else []:
        cmp = compare(record, other)
        names = [PROPERTIES[s].name for s in cmp["suites"]]
        rows = ["<tr><td>" + _e(r["method"]) + "</td>" + "".join(
            f"<td{' class=changed' if r['a'][s] != r['b'][s] else ''}>{_badge(r['a'][s])} {_badge(r['b'][s])}</td>"
            for s in cmp["suites"]) + "</tr>" for r in cmp["rows"]]
        out += [f"<h2>Architectures: {_e(cmp['a'])} and {_e(cmp['b'])}</h2>", f"<p>{_e(summary_line(cmp))} Each cell: "
                f"the verdict on {_e(cmp['a'])}, then on {_e(cmp['b'])}; outlined where they differ.</p>",
                _table(["method", *names], rows, table_id="architectures")]
    return out


def _title(run: dict) -> str:
    return f"shortcut-bench: which attribution method finds the shortcut? (seed {run.get('seed', '?')})"


def render_html(record: dict, figures_dir: Path | None = None) -> str:
    """The whole report as one HTML document with inline CSS, JS, SVG and base64 images (no network)."""
    cells = cells_from_record(record)
    sweep, sweep_html = _sweep(figures_dir)
    summary = summarise(cells, detection_areas(sweep))
    run = record.get("run", {})
    body = [
        *_first_screen(record, cells, summary, sweep),
        "<h2>Shortcut strength</h2>", sweep_html,
        *_architectures(record, figures_dir),
        "<h2>Biased, control and absent models</h2>", _arms(cells, summary),
        "<h2>Flipped examples</h2>", _figures(figures_dir) if figures_dir is not None else "<p>No figures.</p>",
        "<h2>How verdicts are judged</h2>",
        f"<p>{_e(VERDICTS)} Click a column header to sort.</p>",
        f"<p>{_e(seeds_line(run))}</p>",
        f"<p>{_e(RANKING)}</p>",
        "<h2>Ranks per property</h2>", _property_ranks(summary),
        "<h2>Leaderboard: every cell</h2>",
        f'<details class="big"><summary>all {len(cells)} cells (filter by method, property, metric or verdict)'
        '</summary><input id="cells-filter" class="filter" type="search" placeholder="filter, e.g. Saliency or FAIL">'
        f'{_cells_table(cells, summary["survivors"])}</details>',
        "<h2>Scores per property</h2>", _charts(cells, summary["suites"]),
        "<h2>Model cards</h2>", _cards(run),
        "<h2>Redundancy</h2>", _redundancy(cells),
        "<h2>Metric validity</h2>",
        "<p>Each metric must separate the controls as it should in this run; an uninformative metric does not "
        "decide verdicts.</p>", _validity(cells),
        "<h2>Run record</h2>", _run_table(run),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(_title(run))}</title>"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{JS}</script>\n</body></html>\n")


def write_html(record: dict, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` atomically, embedding the figures found in ``out_dir``."""
    path = Path(out_dir) / "index.html"
    atomic_write_text(path, render_html(record, Path(out_dir)))
    return path


def write_sibling_reports(record: dict, out_dir: Path) -> list[Path]:
    """Rewrite the reports of the other architectures' runs beside ``out_dir`` so they show this run's verdicts too."""
    written = []
    for path, other in sibling_records(Path(out_dir), record):
        written += [*write_reports(other, path.parent), write_html(other, path.parent)]
    return written
