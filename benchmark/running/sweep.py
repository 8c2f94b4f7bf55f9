"""The shortcut-strength sweep: localisation graded at several watermark sizes, and each method's detection limit.

Each level is its own world (the same images, a smaller or fainter mark) with its own biased, control and absent
models, cached like the grid's. A level whose biased model did not learn the shortcut (flip rate below
benchmark.shortcut.LEARNED_FLIP_RATE) is reported and excluded, never graded as a method failure. At every other level each
method's localisation cells are judged exactly as in the grid (same controls, pass level and Benjamini-Hochberg
step within the level), and its effect (skill averaged over the metrics image by image) is kept with its CI.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import shortcut
from benchmark.data import build_world
from benchmark.data.watermark import footprint_fraction, mark_size
from benchmark.errors import ConfigError, ShortcutNotLearned
from benchmark.grading.grader import Grader, grade_cell
from benchmark.grading.properties import LOCALISATION
from benchmark.grading.verdict import ERROR, FAIL, INCONCLUSIVE, PASS, Cell, fdr_survivors, property_verdict
from benchmark.options import MarkLevel
from benchmark.reporting.ranking import effect
from benchmark.session import prepare

# Footprint areas (share of the image) per profile; 32 px cannot draw a mark under 0.88% (3×3 px).
AREAS = {"quick": (0.01, 0.015, 0.025, 0.04)}
DEFAULT_AREAS = (0.005, 0.01, 0.02, 0.04)


def levels_for(profile_name: str) -> tuple[MarkLevel, ...]:
    """The sweep's levels on a profile, weakest first."""
    return tuple(MarkLevel(a) for a in AREAS.get(profile_name, DEFAULT_AREAS))


def parse_levels(text: str) -> tuple[MarkLevel, ...]:
    """Levels from "AREA[@OPACITY],...", e.g. "0.01,0.04@0.5" (areas and opacities in (0, 1])."""
    levels = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        area, _, opacity = part.partition("@")
        try:
            level = MarkLevel(float(area), float(opacity) if opacity else 1.0)
        except ValueError:
            raise ConfigError(f"sweep level {part!r} is not AREA[@OPACITY] with numbers, e.g. 0.02 or 0.04@0.5") from None
        if not (0 < level.area < 1 and 0 < level.opacity <= 1):
            raise ConfigError(f"sweep level {part!r}: the area must be in (0, 1) and the opacity in (0, 1]")
        levels.append(level)
    if not levels:
        raise ConfigError("no sweep levels given; write them as AREA[@OPACITY],..., e.g. 0.01,0.02,0.04")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"sweep levels repeat: {text!r}")
    return tuple(sorted(levels))


def parse_mark(text: str | None, size: int, option: str = "--bench-mark") -> MarkLevel | None:
    """The grid's --bench-mark level (None: the profile's default mark); ConfigError when it is malformed or draws no
    mark on ``size``-px images."""
    if text is None:
        return None
    try:
        levels = parse_levels(text)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}".replace("sweep level", "mark")) from None
    if len(levels) != 1:
        raise ConfigError(f"{option} takes one AREA[@OPACITY], e.g. 0.06 or 0.04@0.5; got {text!r}")
    try:
        levels[0].watermark(size)  # now, not after the data is built
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None
    return levels[0]


def check_levels(levels: tuple[MarkLevel, ...], size: int) -> None:
    """Raise ConfigError when a level draws no mark at ``size`` px, or two levels draw the same one."""
    drawn: dict = {}
    for level in levels:
        mark = level.watermark(size)
        if mark in drawn:
            h, w = mark_size(mark, size, size)
            raise ConfigError(f"levels {drawn[mark]} and {level.label} draw the same {w}×{h} px mark at {size} px; "
                              "drop one or choose areas further apart")
        drawn[mark] = level.label


@dataclass
class LevelOutcome:
    """One level of a sweep: its mark, the biased model's card, and the localisation cells graded there."""

    level: MarkLevel
    footprint: float  # the realised mark's share of the image
    card: dict
    cells: list[Cell] = field(default_factory=list)
    too_few: str = ""  # learned, but too few confident flips to grade (the grader's reason)
    other_seeds: dict[str, dict] = field(default_factory=dict)  # training seed -> biased card (--bench-model-seeds)

    @property
    def learned(self) -> bool:
        """Whether this level can be graded: every seed's biased model learned the shortcut, with enough confident
        flips."""
        return not self.excluded

    @property
    def excluded(self) -> str:
        """Why the level is excluded ("" when it is graded)."""
        seeds = [("", self.card), *((f" of training seed {k}", c) for k, c in self.other_seeds.items())]
        for which, card in seeds:
            if shortcut.level_exclusion(card, which):
                return shortcut.level_exclusion(card, which)
        return self.too_few

    def verdicts(self) -> dict[str, str]:
        """Each method's localisation verdict at this level (majority of surviving passes, as in the grid)."""
        survivors, _ = fdr_survivors(self.cells)
        by: dict[str, list[Cell]] = {}
        for c in self.cells:
            by.setdefault(c.method, []).append(c)
        return {m: property_verdict(cs, survivors) for m, cs in sorted(by.items())}


SWEEP_PROPERTY = "shortcut_bench_sweep"  # key on report.user_properties (survives xdist)


def outcome_to_dict(o: LevelOutcome) -> dict:
    """JSON-able form of one level's outcome (cells as their JSON text, as in a run record's user_properties)."""
    return {"level": dataclasses.asdict(o.level), "footprint": o.footprint, "card": o.card,
            "cells": [c.to_json() for c in o.cells], "too_few": o.too_few, "other_seeds": o.other_seeds}


def outcome_from_dict(d: dict) -> LevelOutcome:
    """Inverse of :func:`outcome_to_dict`."""
    return LevelOutcome(MarkLevel(**d["level"]), d["footprint"], d["card"], [Cell.from_json(c) for c in d["cells"]],
                        d.get("too_few", ""), d.get("other_seeds") or {})


def outcome_to_json(o: LevelOutcome) -> str:
    """Serialise one level's outcome (for user_properties)."""
    return json.dumps(outcome_to_dict(o), sort_keys=True)


def outcome_from_json(text: str) -> LevelOutcome:
    """Inverse of :func:`outcome_to_json`."""
    return outcome_from_dict(json.loads(text))


SWEEP_KIND = "shortcut-bench sweep"


def sweep_record(outcomes: list[LevelOutcome], run: dict) -> dict:
    """The sweep's run record (sweep.json): the summary the reports read, the run, and every level's cells (so that
    shards merge like the grid's, see :func:`benchmark.running.merge.merge_sweeps`)."""
    outcomes = sorted(outcomes, key=lambda o: o.level)
    return {"kind": SWEEP_KIND, **summarise(outcomes), "run": run,
            "outcomes": [outcome_to_dict(o) for o in outcomes]}


def merge_outcomes(parts: list[LevelOutcome]) -> list[LevelOutcome]:
    """One outcome per level from per-method parts (the tests of one level each carry one method's cells)."""
    merged: dict[MarkLevel, LevelOutcome] = {}
    for o in parts:
        if o.level not in merged:
            merged[o.level] = LevelOutcome(o.level, o.footprint, o.card, [], o.too_few, o.other_seeds)
        merged[o.level].cells += o.cells
    return list(merged.values())


# Verdicts at a stronger level that stop a detection limit: evidence that the method misses the mark there, or a crash
# (never a silent pass). INCONCLUSIVE, UNDECIDED and N/A say nothing against the method and are passed over.
BLOCKING = (FAIL, ERROR)


def _limits(included: list[LevelOutcome], verdicts: list[dict[str, str]],
            inconclusive_as: str | None = None) -> dict[str, MarkLevel | None]:
    # ``included`` weakest first, ``verdicts`` its levels' verdicts: walk down from the strongest level until a FAIL
    # (or ERROR), and keep the weakest PASS seen on the way. ``inconclusive_as`` reads every INCONCLUSIVE as PASS or
    # FAIL (the ends of the limit's range); None passes over it (the published limit).
    limits: dict[str, MarkLevel | None] = {}
    for m in sorted({m for v in verdicts for m in v}):
        limit = None
        for o, v in zip(reversed(included), reversed(verdicts)):
            verdict = inconclusive_as if inconclusive_as and v.get(m) == INCONCLUSIVE else v.get(m)
            if verdict in BLOCKING:
                break
            if verdict == PASS:
                limit = o.level
        limits[m] = limit
    return limits


def limit_ranges(outcomes: list[LevelOutcome]) -> dict[str, tuple[MarkLevel | None, MarkLevel | None]]:
    """Each method's detection limit with every INCONCLUSIVE level read as PASS, then as FAIL: the weakest and the
    strongest it could be once those levels are decided (None: never). Equal ends: the limit is decided.
    """
    included = sorted((o for o in outcomes if o.learned), key=lambda o: o.level)
    return _ranges(included, [o.verdicts() for o in included])


def _ranges(included: list[LevelOutcome],
            verdicts: list[dict[str, str]]) -> dict[str, tuple[MarkLevel | None, MarkLevel | None]]:
    # As limit_ranges, on verdicts already judged (Benjamini-Hochberg runs once per level).
    weak, strong = (_limits(included, verdicts, inconclusive_as=read) for read in (PASS, FAIL))
    return {m: (weak[m], strong[m]) for m in weak}


def detection_limits(outcomes: list[LevelOutcome]) -> dict[str, MarkLevel | None]:
    """Each method's weakest learned level at which it passes localisation with no FAIL (or ERROR) at any stronger
    learned level (None: never).

    Excluded levels (the model did not learn) neither help nor hurt. An INCONCLUSIVE stronger level is tolerated: its
    CI straddles, which is no evidence of a miss. A pass below a fail is not a detection limit, so a lone lucky pass
    cannot set it: with PASS, FAIL, PASS from weak to strong the limit is the strongest level.
    """
    included = sorted((o for o in outcomes if o.learned), key=lambda o: o.level)
    return _limits(included, [o.verdicts() for o in included])


def detection_limit(outcomes: list[LevelOutcome], method: str) -> MarkLevel | None:
    """One method's detection limit (see :func:`detection_limits`)."""
    return detection_limits(outcomes).get(method)


def level_cells() -> list[tuple]:
    """The (property, metric spec) pairs a level grades each method on: localisation's metrics, default thresholds."""
    return [(LOCALISATION, m) for m in LOCALISATION.metrics]


def grade_level(grader: Grader, methods: list[str]) -> list[Cell]:
    """Every localisation cell of ``methods`` on one level's models (a :class:`benchmark.grading.grader.Grader` of them)."""
    return [grade_cell(grader, prop, m, method) for method in methods for prop, m in level_cells()]


def prepare_level(profile, options, level: MarkLevel, *, progress: bool = False):
    """(outcome without cells, Grader or None): the level's world and biased models (one per training seed); the control
    and absent models, and a grader of them, only when every biased model learned the shortcut and flips enough cats
    confidently (an excluded level costs its biased models), by :mod:`benchmark.shortcut`'s rule."""
    opts = dataclasses.replace(options, mark=level)
    spec = opts.data_spec(profile)
    world = build_world(spec, Path(opts.cache_root) / "datasets")
    cards: dict[str, dict] = {}
    too_few = ""

    def gate(biased, world, seed: int) -> None:
        nonlocal too_few
        cards[str(seed)] = dict(biased.card)
        if shortcut.level_exclusion(biased.card):
            raise ShortcutNotLearned(shortcut.level_exclusion(biased.card))  # the other seeds need not train
        # A model can flip half the cats with too few of them confidently: the first such seed's reason.
        too_few = too_few or shortcut.too_few(len(shortcut.stored_confident_flips(biased, world)))

    try:
        bench = prepare(profile, opts, progress=progress, world=world, gate=gate)
    except ShortcutNotLearned:
        bench = None
    (_, first), *others = cards.items()
    outcome = LevelOutcome(level, footprint_fraction(spec.watermark, spec.image_size), first, other_seeds=dict(others),
                           too_few=too_few)
    if bench is None or too_few:
        return outcome, None
    return outcome, Grader(bench)


def summarise(outcomes: list[LevelOutcome]) -> dict:
    """JSON-able sweep result: levels (with exclusions), each method's verdict and effect per level, detection limits."""
    outcomes = sorted(outcomes, key=lambda o: o.level)
    methods = sorted({c.method for o in outcomes for c in o.cells})
    levels, per_method, included, verdicts_of = [], {m: {} for m in methods}, [], []
    for o in outcomes:
        levels.append({"label": o.level.label, "area": o.level.area, "opacity": o.level.opacity,
                       "footprint": round(o.footprint, 5), "learned": o.learned,
                       "flip_rate": o.card.get("flip_rate"), "clean_accuracy": o.card.get("clean_accuracy"),
                       "mean_p_dog_on_flips": o.card.get("mean_p_dog_on_flips"),
                       "excluded": o.excluded})
        if not o.learned:
            continue
        verdicts = o.verdicts()
        included.append(o)
        verdicts_of.append(verdicts)
        for m in methods:
            cells = [c for c in o.cells if c.method == m]
            e = effect(cells) if cells else None
            per_method[m][o.level.label] = {"verdict": verdicts.get(m), "effect": None if e is None else e.as_dict()}
    found = _limits(included, verdicts_of)
    limits = {m: (lim.label if (lim := found.get(m)) else None) for m in methods}
    ranges = _ranges(included, verdicts_of)
    return {"property": LOCALISATION.key, "version": LOCALISATION.version, "levels": levels, "methods": per_method,
            "detection_limits": limits,
            "detection_limit_ranges": {m: [lv.label if lv else None for lv in ranges.get(m, (None, None))]
                                       for m in methods},
            "rule": ("A level whose biased model flips fewer than half the cats, or too few of them confidently to "
                     "grade, is excluded. At every other level a "
                     "method's localisation is judged as in the grid (controls, pass level, Benjamini-Hochberg within "
                     "the level); its detection limit is the weakest included level at which it passes with no FAIL "
                     "(or ERROR) at any stronger included level. An INCONCLUSIVE stronger level does not stop it. Its range "
                     "reads every INCONCLUSIVE level as PASS, then as FAIL: where the ends differ, the limit is "
                     "undecided between them.")}
