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
    assert "detection limit (sweep)" in text and "EXCLUDED: the biased model flipped 20%" in text
    overall = re.search(r'<table id="overall".*?</table>', text, re.S).group(0)
    assert "<td data-sort=\"0.04\">4%</td>" in overall and ">—</td>" in overall  # unswept methods: —
    bare = tmp_path_factory.mktemp("bare")
    record, _ = _record()
    assert "detection limit (sweep)" not in render_html(record, bare) and "-m sweep" in render_html(record, bare)


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
    for section in ("Overall", "Leaderboard: every cell", "Scores per property", "Flipped examples", "Model cards",
                    "Metric validity", "Run record"):
        assert f"<h2>{section}</h2>" in text
    for outcome in ("v-PASS", "v-FAIL", "v-INCONCLUSIVE", "v-ERROR", "v-NA"):
        assert outcome in text
    # Saliency's noise stability, one PASS and one INCONCLUSIVE of two votes, and its localisation, one PASS and one
    # FAIL, are INCONCLUSIVE properties; the legend names the mark.
    overall = re.search(r'<table id="overall".*?</table>', text, re.S).group(0)
    assert '<span class="v v-INCONCLUSIVE">INCONCLUSIVE</span>' in overall and "0/2, 2 inconclusive" in overall
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
    assert "detection limit" not in (bare / "leaderboard.md").read_text()


def test_model_cards_state_the_mark_and_whether_the_biased_model_met_the_shortcut_targets():
    from benchmark.reporting.html import _cards

    card = {"clean_accuracy": 0.89, "flip_rate": 0.97, "mean_p_dog_on_flips": 0.94}
    mark = {"footprint_fraction": 0.039, "footprint_px": [5, 8], "position_distribution": "one of the four corners"}
    text = _cards({"models": {"biased": card, "control": {"clean_accuracy": 0.88}}, "data": {"watermark": mark}})
    assert "The mark covers 3.9% of the image (8×5 px); position: one of the four corners." in text
    assert "Biased model, shortcut targets met (flip rate &gt;= 80%" in text
    weak = _cards({"models": {"biased": {**card, "flip_rate": 0.3}}})
    assert "shortcut targets MISSED: flip rate &gt;= 80% (got 0.3)" in weak and "mark covers" not in weak


def test_the_first_screen_is_the_heatmap_and_the_cell_table_is_folded(report_dir, chromium, tmp_path):
    dom, console = chromium(report_dir / "index.html")
    assert console == [], console
    first = re.search(r"<h2>(.*?)</h2>", dom).group(1)
    assert first.startswith("At a glance")
    heat = re.search(r'<table id="heatmap".*?</table>', dom, re.S).group(0)
    record, methods = _record()
    assert heat.count("<tr>") == 2 + len(methods)  # two header rows, one row per method
    assert "background:#" in heat and "✓" in heat and "✗" in heat
    # Heatmap, ranking, sweep, arms and figure come before the explanation and the every-cell table, which is folded.
    order = [dom.index(f"<h2>{h}") for h in ("At a glance", "Overall", "Shortcut strength",
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
