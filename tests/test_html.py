"""The self-contained HTML report: escaping, no network resources, and a real render in headless Chromium."""

from __future__ import annotations

import json
import re

import pytest

from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import ERROR, FAIL, INCONCLUSIVE, NA, PASS, Cell
from benchmark.reporting.html import render_html, write_html
from benchmark.reporting.report import build_record

EVIL = "<script>alert(1)</script>"
RUN = {"profile": {"name": "quick"}, "profile_reason": "chosen", "seed": 0, "git": "abc", "device": "cpu",
       "started": "2026-01-01T00:00:00Z", "wall_seconds": 1.0, "versions": {"torch": "2"},
       "models": {"biased": {"arch_name": "SmallCNN-16", "clean_accuracy": 0.887, "flip_rate": 0.99},
                  "control": {"arch_name": "SmallCNN-16", "clean_accuracy": 0.883, "flip_rate": 0.01}}}


def _cell(method, metric, outcome, suite="watermark_localisation", mean=0.5, informative=True):
    prop = PROPERTIES[suite]
    m = prop.metric(metric)
    score = None if outcome in (NA, ERROR) else {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n": 8}
    return Cell(suite=suite, suite_version=prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=m.threshold, outcome=outcome, message=f"{method} said {EVIL}",
                score=score, informative=informative, validity_reason=f"evidence {EVIL}")


def _record():
    cells = [_cell("Saliency", "RelevanceMassAccuracy", PASS), _cell("Saliency", "AUC", FAIL, mean=0.6),
             _cell(EVIL, "RelevanceMassAccuracy", FAIL, mean=0.05), _cell(EVIL, "AUC", ERROR),
             _cell("Oracle", "MPRT", NA, suite="randomisation"),
             _cell("Saliency", "MaxSensitivity", PASS, suite="noise_stability", mean=0.1),
             _cell("Saliency", "AvgSensitivity", INCONCLUSIVE, suite="noise_stability", mean=0.3)]
    return build_record(cells, RUN), {c.method for c in cells}


def _png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.imshow([[0, 1], [1, 0]])
    fig.savefig(path, format="png")
    plt.close(fig)


SWEEP = {"property": "watermark_localisation", "version": "4", "rule": "the rule",
         "levels": [{"label": "1%", "area": 0.01, "opacity": 1.0, "footprint": 0.0088, "learned": False,
                     "flip_rate": 0.2, "clean_accuracy": 0.9, "mean_p_dog_on_flips": 0.6,
                     "excluded": "the biased model flipped 20% of cats (< 50%): it did not learn the shortcut"},
                    {"label": "4%", "area": 0.04, "opacity": 1.0, "footprint": 0.039, "learned": True,
                     "flip_rate": 0.97, "clean_accuracy": 0.89, "mean_p_dog_on_flips": 0.94, "excluded": ""}],
         "methods": {"Saliency": {"4%": {"verdict": "PASS", "effect": {"mean": 0.7, "ci_low": 0.6, "ci_high": 0.8,
                                                                        "n": 9}}}},
         "detection_limits": {"Saliency": "4%"}}


@pytest.fixture
def report_dir(tmp_path):
    record, _ = _record()
    _png(tmp_path / "flipped_examples.png")
    (tmp_path / "sweep.json").write_text(json.dumps(SWEEP))
    _png(tmp_path / "sweep.png")
    write_html(record, tmp_path)
    return tmp_path


def test_the_sweep_adds_its_curves_and_a_detection_limit_column(report_dir, tmp_path_factory):
    text = (report_dir / "index.html").read_text()
    assert "<h2>Shortcut strength</h2>" in text and 'id="sweep-curves"' in text
    assert "EXCLUDED: the biased model flipped 20%" in text
    ranked = re.search(r'<table id="ranked".*?</table>', text, re.S).group(0)
    assert "<th>detection limit</th>" in ranked and "<td data-sort=\"0.04\">4%</td>" in ranked
    assert '<td data-sort="">—</td>' in ranked  # unswept methods: —
    bare = tmp_path_factory.mktemp("bare")
    record, _ = _record()
    assert "<th>detection limit</th>" not in render_html(record, bare) and "-m sweep" in render_html(record, bare)


def test_user_strings_are_escaped(report_dir):
    text = (report_dir / "index.html").read_text()
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script>") == 1  # only the page's own sorting script


def test_no_network_resources_and_everything_inline(report_dir):
    text = (report_dir / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "http://" not in text and "https://" not in text and "@import" not in text
    assert 'src="data:image/png;base64,' in text
    assert "<svg" in text and "<style>" in text


def test_every_method_verdict_and_section_is_there(report_dir):
    text = (report_dir / "index.html").read_text()
    _, methods = _record()
    for m in methods:
        assert m.replace("<", "&lt;").replace(">", "&gt;") in text
    for section in ("Controls (constructed maps, not ranked)", "Leaderboard: every cell", "Scores per property", "Flipped examples", "Model cards",
                    "Metric validity", "Run record"):
        assert f"<h2>{section}</h2>" in text
    for outcome in ("v-PASS", "v-FAIL", "v-INCONCLUSIVE", "v-ERROR", "v-NA"):
        assert outcome in text
    # Saliency's noise stability, one PASS and one INCONCLUSIVE of two votes, and its localisation, one PASS and one
    # FAIL, are INCONCLUSIVE properties; the legend names the mark.
    ranked = re.search(r'<table id="ranked".*?</table>', text, re.S).group(0)
    assert '<span class="v v-INCONCLUSIVE">INCONCLUSIVE</span>' in ranked
    assert "? inconclusive" in text and "It FAILs when its skill CI lies wholly below the pass level" in text
    assert "↑" in text and "↓" in text and "0.887" in text


def test_render_is_deterministic(report_dir):
    record, _ = _record()
    assert render_html(record, report_dir) == (report_dir / "index.html").read_text()


def test_opens_in_headless_chromium_without_console_errors(report_dir, chromium):
    dom, console = chromium(report_dir / "index.html")
    assert console == [], console
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="1"' in body, body  # the page's script ran to the end
    assert 'data-images-loaded="2"' in body, body  # both embedded figures decoded: examples and sweep curves
    cells_table = re.search(r'<table id="cells".*?</table>', dom, re.S).group(0)
    assert cells_table.count("<tr>") == 1 + len(_record()[0]["cells"])
    assert "alert(1)" in dom and "<script>alert(1)" not in dom


def test_the_markdown_leaderboard_gains_the_detection_limit_column_next_to_a_sweep(report_dir, tmp_path_factory):
    from benchmark.reporting.report import write_reports

    record, _ = _record()
    write_reports(record, report_dir)
    md = (report_dir / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert header.rstrip(" |").endswith("detection limit (sweep)")
    assert any(line.startswith("| ") and "Saliency" in line and "| 4%" in line for line in md.splitlines())
    bare = tmp_path_factory.mktemp("bare-md")
    write_reports(record, bare)
    assert "detection limit (sweep)" not in (bare / "leaderboard.md").read_text()


def test_model_cards_state_the_mark_and_whether_the_biased_model_met_the_shortcut_targets():
    from benchmark.reporting.html import _cards

    card = {"clean_accuracy": 0.89, "flip_rate": 0.97, "mean_p_dog_on_flips": 0.94}
    mark = {"footprint_fraction": 0.039, "footprint_px": [5, 8], "position_distribution": "one of the four corners"}
    text = _cards({"models": {"biased": card, "control": {"clean_accuracy": 0.88}}, "data": {"watermark": mark}})
    assert "The mark covers 3.9% of the image (8×5 px); position: one of the four corners." in text
    assert "Biased model, shortcut targets met (flip rate &gt;= 80%" in text
    weak = _cards({"models": {"biased": {**card, "flip_rate": 0.3}}})
    assert "shortcut targets MISSED: flip rate &gt;= 80% (got 0.3)" in weak and "mark covers" not in weak


def test_the_first_screen_is_the_ranked_table_then_controls_then_heatmap(report_dir, chromium, tmp_path):
    dom, console = chromium(report_dir / "index.html")
    assert console == [], console
    # Legend, ranked table and how to read a FAIL come before any section; then controls, heatmap and the rest.
    assert dom.index('id="legend"') < dom.index('id="ranked"') < dom.index('id="reading-fail"') < dom.index("<h2>")
    first = re.search(r"<h2>(.*?)</h2>", dom).group(1)
    assert first.startswith("Controls")
    heat = re.search(r'<table id="heatmap".*?</table>', dom, re.S).group(0)
    record, methods = _record()
    assert heat.count("<tr>") == 2 + len(methods)  # two header rows, one row per method
    assert "background:#" in heat and "✓" in heat and "✗" in heat
    order = [dom.index(f"<h2>{h}") for h in ("Controls", "At a glance", "Shortcut strength",
                                            "Biased, control and absent models", "Flipped examples",
                                            "How verdicts are judged", "Leaderboard: every cell")]
    assert order == sorted(order)
    assert re.search(r'<details class="big"><summary>all \d+ cells', dom) and 'id="cells-filter"' in dom
    shot = tmp_path / "first-screen.png"
    chromium(report_dir / "index.html", screenshot=shot)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1400 and im.size[1] >= 900
        assert len(set(im.convert("RGB").resize((140, 100)).getdata())) > 20  # a rendered page, not a blank one


def test_the_heatmap_png_is_written_with_the_reports(report_dir):
    from PIL import Image

    from benchmark.reporting.report import write_reports

    record, _ = _record()
    paths = write_reports(record, report_dir)
    png = report_dir / "heatmap.png"
    assert png in paths
    with Image.open(png) as im:
        assert im.size[0] > 300 and im.size[1] > 150


# --- the first screen: a ranked badge table of the real methods, on hand-made records ------------------------------

ALARMS = {"control model": {"beaten": True}, "absent model": {"beaten": False}}


def _graded(method, skill, outcome=PASS, suite="watermark_localisation", metric="AUC", spread=0.02):
    """A deciding cell with per-image skills around ``skill`` (so the method has an effect with a CI)."""
    c = _cell(method, metric, outcome, suite=suite, mean=skill)
    c.skills = [skill + spread * ((i % 5) - 2) for i in range(20)]
    c.skill = {"mean": skill, "ci_low": skill - spread, "ci_high": skill + spread, "n": 20}
    if suite == "watermark_localisation":
        c.comparisons = ALARMS
    return c


def _methods_record(stability=None):
    # Local localises best but fails every gate; Gates passes every gate with a lower localisation effect: an average
    # over properties would put Gates first, the localisation rank puts Local first.
    cells = [_graded("Local", 0.9), _graded("Local", 0.1, FAIL, "randomisation", "MPRT"),
             _graded("Local", 0.1, FAIL, "faithfulness", "ROAD"),
             _graded("Gates", 0.6), _graded("Gates", 0.95, PASS, "randomisation", "MPRT"),
             _graded("Gates", 0.95, PASS, "faithfulness", "ROAD"),
             _graded("Unsure", 0.5, INCONCLUSIVE), _graded("Oracle", 1.0), _graded("Random", 0.0, FAIL)]
    record = build_record(cells, RUN)
    if stability is not None:
        record["stability"] = stability
    return record


def _table_of(text, table_id):
    return re.search(rf'<table id="{table_id}".*?</table>', text, re.S).group(0)


def _methods_in(table):
    return re.findall(r'<tr><td class="num"[^>]*>[^<]*</td><td>([^<]+)</td>', table)


def test_the_ranked_table_holds_the_real_methods_and_the_controls_sit_apart(tmp_path):
    text = render_html(_methods_record(), tmp_path)
    assert _methods_in(_table_of(text, "ranked")) == ["Local", "Gates", "Unsure"]
    assert sorted(_methods_in(_table_of(text, "controls"))) == ["Oracle", "Random"]
    assert text.index('id="ranked"') < text.index("<h2>Controls (constructed maps, not ranked)</h2>") \
        < text.index('id="controls"') < text.index('id="heatmap"')
    ranked = _table_of(text, "ranked")
    # Ranks count real methods only (the Oracle would otherwise hold rank 1), and INCONCLUSIVE shows as a badge.
    assert '<td class="num" data-sort="1">1</td><td>Local</td>' in ranked
    assert '<span class="v v-INCONCLUSIVE">INCONCLUSIVE</span>' in ranked
    assert "0.90 [" in ranked and ">1/1 · 0/1</td>" not in ranked and ">0/1 · 1/1</td>" in ranked  # absent: alarm


def test_the_order_is_the_localisation_effect_not_the_average_of_properties():
    from benchmark.reporting.ranking import summarise

    summary = summarise(cells_from(_methods_record()))
    assert [r["method"] for r in summary["overall"]][:3] == ["Local", "Gates", "Unsure"]
    assert summary["overall"][0]["effect"]["mean"] == pytest.approx(0.9)  # the localisation effect, not the average


def test_the_detection_limit_orders_methods_the_localisation_ci_cannot_separate(tmp_path):
    cells = [_graded("Wide", 0.62, spread=0.1), _graded("Narrow", 0.6, spread=0.1), _graded("Far", 0.1)]
    sweep = {**SWEEP, "methods": {}, "detection_limits": {"Wide": "4%", "Narrow": "1%", "Far": "1%"},
             "levels": [{**SWEEP["levels"][0], "learned": True}, SWEEP["levels"][1]]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    text = render_html(build_record(cells, RUN), tmp_path)
    # Wide and Narrow overlap (rank =1): Narrow finds the weaker 1% mark, so it comes first; Far is below both.
    assert _methods_in(_table_of(text, "ranked")) == ["Narrow", "Wide", "Far"]
    assert "smaller detection limit" in text[:text.index('id="ranked"')]


def test_the_legend_comes_before_the_table_and_says_what_the_order_means(tmp_path):
    text = render_html(_methods_record(), tmp_path)
    legend = re.search(r'<p id="legend">.*?</p>', text, re.S).group(0)
    assert text.index(legend) < text.index('id="ranked"')
    assert "localisation effect" in legend and "never averaged" in legend and "INCONCLUSIVE" in legend
    reading = re.search(r'<section id="reading-fail">.*?</section>', text, re.S).group(0)
    for part in ("Why it failed", "How far to trust it", "What to do next", "--bench-model-seeds"):
        assert part in reading


def test_seed_agreement_reads_the_stability_record_and_marks_one_seed_verdicts(tmp_path):
    bare = _table_of(render_html(_methods_record(), tmp_path), "ranked")
    assert bare.count('class="one-seed"') == 3 and ">1 seed</td>" in bare
    stability = {"watermark_localisation": {"Local": {"seeds": 3, "seeds_pass": 2, "loso_agree": 3},
                                            "Gates": {"seeds": 1, "seeds_pass": 1, "loso_agree": 1}}}
    ranked = _table_of(render_html(_methods_record(stability), tmp_path), "ranked")
    assert "<td>2/3 seeds, leave-one-seed-out 3/3</td>" in ranked
    assert ranked.count('class="one-seed"') == 2  # Gates rests on one seed; Unsure has no record and one seed


def cells_from(record):
    from benchmark.reporting.report import cells_from_record

    return cells_from_record(record)


# The first screen at 1400 × 900: the legend and at least ten ranked rows without scrolling.
FIRST_SCREEN = (1400, 900)
REAL = ("Saliency", "IntegratedGradients", "DeepLift", "GradientShap", "InputXGradient", "GuidedBackprop",
        "Deconvolution", "GradCAM", "GuidedGradCAM", "Occlusion", "Lime", "KernelShap", "SmoothGrad", "LRPEpsilon")


def _full_record():
    cells = []
    for i, m in enumerate([*REAL, "Oracle", "Random", "Sobel", "PositionalPrior"]):
        for s, metric in (("watermark_localisation", "AUC"), ("watermark_localisation", "PointingGame"),
                          ("randomisation", "MPRT"), ("noise_stability", "MaxSensitivity"),
                          ("faithfulness", "ROAD")):
            cells.append(_graded(m, 0.95 - 0.05 * i, (PASS, FAIL, INCONCLUSIVE)[i % 3], s, metric))
    return build_record(cells, {**RUN, "model_seeds": [0, 1, 2]})


def test_the_first_screen_shows_the_legend_and_ten_ranked_rows_at_1400_by_900(chromium, run_child, tmp_path):
    import shutil

    write_html(_full_record(), tmp_path)
    # The fixture found a browser (else it skipped); its names are the fixture's.
    exe = next(shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
               if shutil.which(c))
    # The fixture dumps the DOM at the browser's default size; the first screen is judged at 1400 × 900.
    proc = run_child([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                      f"--window-size={FIRST_SCREEN[0]},{FIRST_SCREEN[1]}", f"--user-data-dir={tmp_path / 'profile'}",
                      "--dump-dom", (tmp_path / "index.html").resolve().as_uri()], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    width, height = map(int, re.search(r'data-viewport="(\d+)x(\d+)"', body).groups())
    assert width == FIRST_SCREEN[0] and height <= FIRST_SCREEN[1], body  # no taller than the screen judged
    assert 'data-legend-on-screen="true"' in body, body
    assert int(re.search(r'data-first-screen-rows="(\d+)"', body).group(1)) >= 10, body


def test_the_figure_shows_a_crashed_hanging_or_non_finite_map_as_an_error_panel():
    import time

    import numpy as np

    from benchmark.reporting.figures import figure_panels

    def maps_of(method, n):
        if method == "Crashes":
            raise RuntimeError("boom")
        if method == "Hangs":
            time.sleep(5)
        out = np.full((n, 1, 4, 4), -2.0, np.float32)
        if method == "NaN":
            out[1, 0, 2, 2] = np.nan
        return out

    panels = figure_panels(["Fine", "Crashes", "Hangs", "NaN"], maps_of, 3, limit=0.5)
    assert panels["Fine"].shape == (3, 4, 4) and (panels["Fine"] == 2.0).all()  # |map|
    assert panels["Crashes"] == "ERROR\nRuntimeError" and panels["Hangs"] == "ERROR\ntimed out"
    assert panels["NaN"] == "ERROR\nnot finite"
