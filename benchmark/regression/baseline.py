"""Regression baselines: a compact record of a run's verdicts, and the comparison of a run against it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from benchmark.cache import CODE_VERSION, atomic_write_json, atomic_write_text, read_json, stable_hash
from benchmark.errors import ConfigError
from benchmark.grading.properties import ARROW, HIGHER, PROPERTIES, MetricSpec
from benchmark.grading.stats import Interval, studentized_mean
from benchmark.grading.verdict import COLLAPSED, ERROR, FAIL, INFO, NA, OUTCOMES, Cell
from benchmark.pinning import pin_models, remove_unpinned
from benchmark.profiles import PROFILES as PROFILES_BY_NAME
from benchmark.profiles import Profile, profile_from
from benchmark.regression.machine import machine_differences

KIND = "shortcut-bench baseline"
SCHEMA = 2  # 2: per-sample scores, graded sample ids, pinned models, machine
DEFAULT_PATH = "reports/baseline.json"
SCORE_DIGITS = 6  # significant digits kept of each per-sample score (far below any metric's tolerance)
MIN_PAIRED = 3  # fewer common images than this cannot support a statistical change

# Statuses of one compared cell or check, in the order the report lists them. UNVERSIONED: the suite's
# declared property changed but kept its version, so nothing can tell old scores from new; it fails the run.
# BORDERLINE: the verdict moved (between PASS, FAIL and INCONCLUSIVE), but the paired score change is within the
# metric's tolerance (float noise of another machine, a score sitting on its threshold); listed, never failing.
REGRESSED, UNVERSIONED, IMPROVED, BORDERLINE, NEW, NOT_COMPARABLE, REMOVED, NOT_RUN, UNCHANGED = (
    "regressed", "unversioned change", "improved", "borderline", "new", "not comparable", "removed", "not run",
    "unchanged")
STATUSES = (REGRESSED, UNVERSIONED, IMPROVED, BORDERLINE, NEW, NOT_COMPARABLE, REMOVED, NOT_RUN, UNCHANGED)
FAILING = (REGRESSED, UNVERSIONED)
CHECK_RANK = {"error": 0, "failed": 1, "passed": 2}


class BaselineError(ConfigError):
    """A baseline file is missing, malformed, or belongs to another profile, seed or data source."""


class BaselineSchemaError(BaselineError):
    """A baseline written by another version of shortcut-bench (an update replaces it)."""


def cell_key(suite: str, metric: str, method: str) -> str:
    """The key of a (suite, metric, method) cell in a baseline: 'suite::metric::method'."""
    return f"{suite}::{metric}::{method}"


def tolerance(metric: MetricSpec) -> float:
    """How far a score may move the wrong way before compare mode calls it a regression.

    The metric's declared ``tolerance``, else 5% of its range for bounded fractions and correlations (width ≤ 2);
    an open-ended metric must declare one (its pass level moves with the controls, so it cannot set the scale).
    """
    declared = metric.tolerance
    if declared is not None:
        return float(declared)
    lo, hi = metric.bounds
    if hi - lo > 2:
        raise ValueError(f"{metric.name} is open-ended ({lo:g}..{hi:g}): declare its compare-mode tolerance")
    return 0.05 * (hi - lo)


def _metric(suite: str, name: str) -> MetricSpec | None:
    prop = PROPERTIES.get(suite)
    return next((m for m in prop.metrics if m.name == name), None) if prop else None


def property_fingerprint(key: str, profile: Profile | None) -> str | None:
    """Hash of a suite's declared property on ``profile``: metrics, every builder setting, controls, pass level."""
    prop = PROPERTIES.get(key)
    if prop is None or profile is None:
        return None
    return stable_hash(prop.describe(profile))


def run_profile(run: dict) -> Profile | None:
    """The Profile a run record graded with: from its full definition, else the registered one of its name."""
    fields = run.get("profile") or {}
    return profile_from(fields) or PROFILES_BY_NAME.get(fields.get("name"))


def world_hash(profile: dict, code_version: str | None) -> str:
    """Hash of the profile's full definition and the data/training code version: the graded world."""
    # The per-cell time limit bounds how long grading may take, not what it computes; how many flipped images the
    # map-only properties grade changes no model and no image's score (scores pair by image id).
    # The number of training seeds is part of the identity instead (only when above one, so one-seed baselines
    # recorded before the option existed still match).
    # min_steps acts only where a training set is smaller than the profile's; its effect is in the models' keys (the
    # epochs trained) and in the pinned weights.
    graded = {k: v for k, v in profile.items() if k not in ("cell_timeout_s", "n_map_only", "model_seeds", "min_steps")}
    return stable_hash({"profile": graded, "code_version": code_version})


def identity(run: dict) -> dict:
    """What a baseline and a run must share to be compared: profile, seed, data source and world."""
    options = run.get("options", {})
    code = (run.get("data") or {}).get("code_version") or CODE_VERSION
    ident = {"profile": run.get("profile", {}).get("name"), "seed": run.get("seed"),
             "data": {"source": options.get("data_source", "procedural"), "root": options.get("data_root")},
             "world": world_hash(run.get("profile", {}), code)}
    seeds = run.get("model_seeds") or []
    if len(seeds) > 1:
        ident["model_seeds"] = list(seeds)
    if options.get("mark"):
        ident["data"]["mark"] = options["mark"]
    return ident


def _describe(ident: dict) -> str:
    data = ident["data"]
    where = f" at {data['root']}" if data.get("root") else ""
    if data.get("mark"):
        where += f" with a mark of area {data['mark']['area']:g} at opacity {data['mark']['opacity']:g}"
    seeds = ident.get("model_seeds") or []
    models = f", models of training seeds {seeds}" if len(seeds) > 1 else ""
    return f"profile {ident['profile']!r}, seed {ident['seed']}, data {data['source']!r}{where}{models}"


def _compact(x: float) -> float:
    return float(f"{x:.{SCORE_DIGITS}g}")


def _cell_entry(c: Cell) -> dict:
    s = c.score or {}
    return {"suite_version": c.suite_version, "outcome": c.outcome, "direction": c.direction,
            "threshold": c.threshold, "standard": c.standard, "informative": c.informative,
            "mean": s.get("mean"), "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
            "scores": [None if v is None else _compact(v) for v in c.scores],
            **({"seed_counts": c.seed_counts} if c.seed_counts else {})}


def weights_shas(models: dict | None) -> dict[str, str]:
    """{model name: sha256} of a baseline's pinned models or a run's graded weights."""
    return {k: v.get("sha256") for k, v in (models or {}).items() if isinstance(v, dict)}


def build_baseline(run: dict, cells: list[Cell], checks: dict[str, str], models: dict | None = None) -> dict:
    """A compact baseline of one run: verdicts, means, CIs and per-sample scores, the graded image ids, the
    pinned models (``models``: see :func:`benchmark.pinning.pin_models`) and the machine that computed it."""
    return {
        "kind": KIND, "schema": SCHEMA, **identity(run),
        "git": run.get("git"), "created": run.get("started"), "versions": run.get("versions", {}),
        "machine": run.get("machine", {}), "data_sha256": (run.get("data") or {}).get("arrays_sha256"),
        "samples": run.get("samples"), "models": models or {},
        "suites": {c.suite: {"version": c.suite_version,
                             "fingerprint": property_fingerprint(c.suite, run_profile(run))}
                   for c in sorted(cells, key=lambda c: c.suite)},
        "cells": {cell_key(c.suite, c.metric, c.method): _cell_entry(c)
                  for c in sorted(cells, key=lambda c: (c.suite, c.metric, c.method))},
        "checks": dict(sorted(checks.items())),
        "history": [],
    }


def load_baseline(path: Path) -> dict:
    """Read and validate a baseline; BaselineError says what is wrong and how to fix it."""
    path = Path(path)
    fix = "write one with `pytest suites/ --bench-update-baseline` (or `python -m benchmark baseline reports/run.json`)"
    data = read_json(path, BaselineError, f"No baseline at {path}", f"restore it from git or {fix}")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise BaselineError(f"{path} is not a shortcut-bench baseline (no \"kind\": {KIND!r}); {fix}.")
    if data.get("schema") != SCHEMA:
        raise BaselineSchemaError(f"{path} has baseline schema {data.get('schema')!r}; this version reads schema "
                                  f"{SCHEMA} (per-sample scores and pinned models): {fix}; it replaces the old file.")
    problems = []
    for field, kind in (("profile", str), ("seed", int), ("data", dict), ("cells", dict), ("checks", dict)):
        if not isinstance(data.get(field), kind):
            problems.append(f"{field!r} must be a {kind.__name__}")
    for key, entry in (data.get("cells") or {}).items() if isinstance(data.get("cells"), dict) else ():
        if key.count("::") != 2 or not isinstance(entry, dict) or entry.get("outcome") not in OUTCOMES \
                or not isinstance(entry.get("suite_version"), str):
            problems.append(f"cell {key!r} needs 'suite::metric::method' with an outcome and a suite_version")
            break
    if problems:
        raise BaselineError(f"{path} is malformed: {'; '.join(problems)}. Restore it from git or {fix}.")
    return data


def check_identity(baseline: dict, run_ident: dict, path: Path | str, *, world: bool = True) -> None:
    """Refuse to compare a run with a baseline of another profile, seed or data source (and, with
    ``world``, of another definition of the profile or another data/training code version)."""
    base = {k: baseline.get(k) for k in ("profile", "seed", "data", "model_seeds")}
    base["data"] = {k: v for k, v in (base["data"] or {}).items() if k in ("source", "root", "mark")}
    base["data"].setdefault("source", None)
    base["data"].setdefault("root", None)
    run_ident = {**run_ident, "model_seeds": run_ident.get("model_seeds")}
    if world and base == {k: run_ident[k] for k in base} and baseline.get("world") != run_ident["world"]:
        raise BaselineError(
            f"{path} was recorded for another definition of profile {base['profile']!r} or another version of "
            "the data/training code (its world hash differs): its scores do not describe this run's models. "
            "Record a new baseline with --bench-update-baseline.")
    if base != {k: run_ident[k] for k in base}:
        raise BaselineError(
            f"{path} is a baseline for {_describe(base)}; this run is {_describe(run_ident)}. Scores of different "
            f"worlds are not comparable: run with the baseline's options (e.g. --bench-profile {base['profile']} "
            f"--bench-seed {base['seed']} --bench-model-seeds {len(base['model_seeds'] or [0])}) or record a baseline for this run at another path "
            f"(--bench-update-baseline reports/baseline-{run_ident['profile']}.json).")


def check_same_weights(baseline: dict, run: dict, baseline_path: Path | str, record_path: Path | str) -> None:
    """Refuse to compare a run record graded on other model weights than the baseline pins."""
    pinned, graded = weights_shas(baseline.get("models")), weights_shas(run.get("weights"))
    differ = sorted(k for k in pinned if k in graded and graded[k] != pinned[k])
    if differ or not graded:
        what = f"other weights for the {', '.join(differ)} model(s)" if differ else "no recorded weights"
        raise BaselineError(
            f"{record_path} was graded on {what} than {baseline_path} pins. A model retrained on another machine has "
            "other weights, so its scores cannot be compared. Grade on the pinned models with "
            f"`pytest suites/ --bench-compare {baseline_path}` (it needs no training).")


def previous_for_update(path: Path, ident: dict) -> tuple[dict | None, str | None]:
    """The baseline an update at ``path`` replaces (None when absent or of another world) and a note when dropped.

    Another profile, seed or data source is refused; a changed world only makes the old cells stale. Training seeds
    added after the old ones are not another world: the update keeps the models it pins and pins the new seeds'.
    """
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        old = load_baseline(path)
    except BaselineSchemaError as exc:
        return None, f"{exc} Its cells are dropped."
    old_seeds, new_seeds = _seeds(old), _seeds(ident)
    grows = len(new_seeds) > len(old_seeds) and new_seeds[:len(old_seeds)] == old_seeds
    check_identity(old, {**ident, "model_seeds": old.get("model_seeds")} if grows else ident, path, world=False)
    if old.get("world") != ident["world"]:
        return None, f"{path} was recorded for another world; its cells are dropped"
    if grows:
        return old, (f"{path} was recorded on training seeds {old_seeds}; this update adds seeds "
                     f"{new_seeds[len(old_seeds):]}, grading the models it pins and pinning the new seeds' models")
    return old, None


def _seeds(ident: dict) -> list[int]:
    """The training seeds a baseline or run identity names (its seed alone when it names none)."""
    return list(ident.get("model_seeds") or [ident.get("seed", 0)])


@dataclass
class Change:
    """One cell or check of the comparison."""

    key: str
    status: str
    before: str
    after: str
    reason: str


def _fmt(entry: dict | None) -> str:
    if entry is None:
        return "—"
    if entry.get("mean") is None:
        return entry["outcome"]
    return f"{entry['outcome']} {entry['mean']:.3f}"


def paired_change(b: dict, a: dict, direction: str, b_samples: list | None, a_samples: list | None, *,
                  seed: int = 0) -> Interval | None:
    """Studentised 95% CI of the per-image gain (this run − baseline, signed so that positive is better) on the images
    both graded, paired by test-set id; None when fewer than MIN_PAIRED images are shared."""
    sb, sa = b.get("scores") or [], a.get("scores") or []
    b_ids, a_ids = score_ids(b_samples, len(sb), b.get("seed_counts")), score_ids(a_samples, len(sa), a.get("seed_counts"))
    if b_ids is not None and a_ids is not None:
        pos_a = {i: k for k, i in enumerate(a_ids)}
        pairs = [(sb[k], sa[pos_a[i]]) for k, i in enumerate(b_ids) if i in pos_a]
    elif len(sa) == len(sb):
        pairs = list(zip(sb, sa))  # no ids recorded: the same graded set in the same order
    else:
        pairs = []
    # An image whose map collapsed in either run has no score there (None): nothing to pair.
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    if len(pairs) < MIN_PAIRED:
        return None
    before, after = np.array(pairs, dtype=np.float64).T
    gain = after - before if direction == HIGHER else before - after
    return studentized_mean(gain, seed=seed)


def score_ids(samples, n: int, seed_counts: list[int] | None) -> list | None:
    """The image id of each of a cell's ``n`` scores (None when the record cannot say).

    ``samples``: the run's graded test-set ids, a list (one training seed) or {seed: ids} (several; ids are then
    "seed:id"). A property grades a prefix of each seed's graded images; ``seed_counts`` says how long each is.
    """
    if isinstance(samples, dict):
        if not seed_counts or len(seed_counts) != len(samples):
            return None
        ids = []
        for (seed, graded), count in zip(samples.items(), seed_counts):
            if count > len(graded):
                return None
            ids += [f"{seed}:{int(i)}" for i in graded[:count]]
        return ids if len(ids) == n else None
    if samples is None or len(samples) < n or seed_counts:
        return None
    return [int(i) for i in samples[:n]]


def _compare_cell(key: str, b: dict, a: dict, baseline: dict, samples: list | None,
                  profile: Profile | None) -> tuple[str, str]:
    suite, metric, _ = key.split("::")
    if b["suite_version"] != a["suite_version"]:
        return NOT_COMPARABLE, f"suite v{a['suite_version']} vs baseline v{b['suite_version']}"
    recorded = (baseline.get("suites") or {}).get(suite)
    if isinstance(recorded, dict) and recorded.get("version") == a["suite_version"] \
            and recorded.get("fingerprint") not in (None, property_fingerprint(suite, profile)):
        return UNVERSIONED, (f"the {suite} property (metrics, settings, controls or pass level) changed since the "
                             f"baseline but is still v{a['suite_version']}: bump its version in benchmark/grading/properties.py")
    if b.get("standard") != a.get("standard"):
        return NOT_COMPARABLE, f"judged by {a.get('standard')!r}, the baseline by {b.get('standard')!r}"
    if NA in (a["outcome"], b["outcome"]):
        if a["outcome"] == b["outcome"]:
            return UNCHANGED, "n/a in both"
        return NOT_COMPARABLE, f"applicability changed ({b['outcome']} → {a['outcome']}): the method's capabilities changed"
    note = ""
    if a.get("informative") is False or b.get("informative") is False:
        note = "; metric uninformative in " + ("both runs" if a.get("informative") is b.get("informative") is False
                                              else "this run" if a.get("informative") is False else "the baseline")
    flip = f"{b['outcome']} → {a['outcome']}"
    # A crash is never float noise: ERROR where the baseline scored is a regression, the reverse an improvement.
    if ERROR in (a["outcome"], b["outcome"]):
        if a["outcome"] == b["outcome"]:
            return UNCHANGED, f"ERROR in both{note}"
        return (REGRESSED if a["outcome"] == ERROR else IMPROVED), f"{flip}{note}"
    spec = _metric(suite, metric)
    tol = tolerance(spec) if spec else 0.0
    direction = a.get("direction", HIGHER)
    change = paired_change(b, a, direction, baseline.get("samples"), samples)
    if change is None:
        if a["outcome"] == b["outcome"]:
            return UNCHANGED, f"{a['outcome']} in both (fewer than {MIN_PAIRED} images graded in both){note}"
        return NOT_COMPARABLE, f"{flip}, but fewer than {MIN_PAIRED} images were graded in both runs{note}"
    moved = (f"paired change {change.fmt()} ({ARROW[direction]} better is +; tolerance {tol:g}, "
             f"n={change.n} images)")
    beyond_bad, beyond_good = change.high < -tol, change.low > tol
    if a["outcome"] == INFO or b["outcome"] == INFO:
        # Informational properties grade nothing, so a moved score is news, never a regression.
        return UNCHANGED, (f"informational; {moved}" if beyond_bad or beyond_good else f"{INFO} in both") + note
    verdict = f"{flip}; " if a["outcome"] != b["outcome"] else ""
    if beyond_bad:
        return REGRESSED, f"{verdict}{moved}{note}"
    if beyond_good:
        return IMPROVED, f"{verdict}{moved}{note}"
    if a["outcome"] != b["outcome"]:
        return BORDERLINE, f"borderline: verdict moved within tolerance ({flip}; {moved}){note}"
    return UNCHANGED, f"{a['outcome']} in both{note}"


def _compare_check(b: str, a: str) -> tuple[str, str]:
    if a == b:
        return UNCHANGED, f"{a} in both"
    if a not in CHECK_RANK or b not in CHECK_RANK:
        return NOT_COMPARABLE, f"{b} → {a}"
    worse = CHECK_RANK[a] < CHECK_RANK[b]
    return (REGRESSED, "the check no longer passes") if worse else (IMPROVED, "the check passes now")


def compare(baseline: dict, cells: list[Cell], checks: dict[str, str], *,
            registered: set[str] | None = None, samples: list | None = None,
            profile: Profile | None = None) -> list[Change]:
    """Every cell and check of a run against a baseline, sorted by status then key.

    ``registered``: the methods that exist now (a baseline cell of a method that is gone is
    'removed', of one that was just not selected 'not run'; a check absent from the run is 'not run').
    ``samples``: the run's graded test-set ids, in score order (pairs its per-sample scores with the baseline's).
    ``profile``: the run's profile (its builder settings are fingerprinted); default: the baseline's by name.
    """
    profile = profile or PROFILES_BY_NAME.get(baseline.get("profile"))
    out = []
    current = {cell_key(c.suite, c.metric, c.method): _cell_entry(c) for c in cells}
    for key, a in current.items():
        b = baseline["cells"].get(key)
        if b is None:
            out.append(Change(key, NEW, "—", _fmt(a), "no baseline for this cell: graded, not compared"))
        else:
            status, reason = _compare_cell(key, b, a, baseline, samples, profile)
            out.append(Change(key, status, _fmt(b), _fmt(a), reason))
    for key, b in baseline["cells"].items():
        if key in current:
            continue
        suite, metric, method = key.split("::")
        gone = _metric(suite, metric) is None or (registered is not None and method not in registered)
        out.append(Change(key, REMOVED if gone else NOT_RUN, _fmt(b), "—",
                          "method, metric or suite no longer exists" if gone else "not selected in this run"))
    for key, a in checks.items():
        b = baseline["checks"].get(key)
        if b is None:
            out.append(Change(key, NEW, "—", a, "no baseline for this check"))
        else:
            status, reason = _compare_check(b, a)
            out.append(Change(key, status, b, a, reason))
    for key, b in baseline["checks"].items():
        if key not in checks:
            out.append(Change(key, NOT_RUN, b, "—", "not selected in this run"))
    return sorted(out, key=lambda c: (STATUSES.index(c.status), c.key))


# The outcomes whose test fails (verdict.assert_cell): a baseline that recorded one expects that test to fail again.
FAILING_OUTCOMES = (FAIL, ERROR, COLLAPSED)


def expected_failure(baseline: dict, key: str, suite_version: str | None = None, standard: str | None = None) -> str | None:
    """The xfail reason when the baseline recorded a failure for this cell (or check), else None.

    A cell that is INCONCLUSIVE in this run keeps its passing test under the mark, never a strict XPASS
    (benchmark.running.teststatus.settle_strict_xpass): the paired comparison, not the test, says whether it moved.
    """
    if "::" in key and key.count("::") == 2 and key in baseline["cells"]:
        b = baseline["cells"][key]
        if b["outcome"] not in FAILING_OUTCOMES:
            return None
        if suite_version is not None and b["suite_version"] != suite_version:
            return None
        if standard is not None and b.get("standard") != standard:
            return None
        return f"baseline {b['outcome']}; a pass is an improvement to record with --bench-update-baseline"
    if baseline["checks"].get(key) in ("failed", "error"):
        return f"baseline {baseline['checks'][key]}; a pass is an improvement to record with --bench-update-baseline"
    return None


def fails(changes: list[Change]) -> bool:
    """Whether the comparison fails the run: something regressed or a property changed without a version bump."""
    return any(c.status in FAILING for c in changes)


def counts(changes: list[Change]) -> dict[str, int]:
    """Number of changes per status (every status present, zeros included)."""
    return {s: sum(c.status == s for c in changes) for s in STATUSES}


def summary_line(changes: list[Change]) -> str:
    """'2 regressed, 1 improved, ...' (zero counts left out, 'nothing to compare' when empty)."""
    n = counts(changes)
    parts = [f"{v} {k}" for k, v in n.items() if v]
    return ", ".join(parts) if parts else "nothing to compare"


def report_lines(changes: list[Change], limit: int = 60) -> list[tuple[str, str]]:
    """Terminal lines (text, status): regressed, improved and removed one per cell; new cells grouped by
    method, not-comparable ones by reason, so a new suite version is one line, not hundreds."""
    lines = []
    for c in changes:
        if c.status in (REGRESSED, IMPROVED, BORDERLINE, REMOVED):
            lines.append((f"{c.status.upper():>10}  {c.key}: {c.before} → {c.after} ({c.reason})", c.status))
    if len(lines) > limit:
        lines = lines[:limit] + [(f"... {len(lines) - limit} more in compare.md", "")]
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        if c.status == NEW:
            who = c.key.split("::")[2] if c.key.count("::") == 2 and "/" not in c.key else "checks"
            groups.setdefault((NEW, who), []).append(c)
        elif c.status in (NOT_COMPARABLE, UNVERSIONED):
            suite = c.key.split("::")[0]
            groups.setdefault((c.status, f"{suite}: {c.reason}"), []).append(c)
    for (status, what), group in groups.items():
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(_tally(c.after.split()[0] for c in group).items()))
        label = f"method {what}" if status == NEW and what != "checks" else what
        unit = "check(s)" if what == "checks" else "cell(s)"
        lines.append((f"{status.upper():>10}  {label}: {len(group)} {unit} ({outcomes})", status))
    return lines


def _tally(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def render_markdown(changes: list[Change], baseline_path: str, baseline: dict, run: dict) -> str:
    """compare.md: the verdict first, then one table per status (unchanged cells only counted)."""
    n = counts(changes)
    failing = [f"{n[REGRESSED]} regressed"] * bool(n[REGRESSED]) + \
        [f"{n[UNVERSIONED]} changed without a version bump"] * bool(n[UNVERSIONED])
    verdict = f"**{', '.join(failing)}**: the run fails." if failing else "**No regressions.**"
    lines = ["# shortcut-bench: comparison with the baseline", "",
             f"Baseline `{baseline_path}` ({_describe({k: baseline[k] for k in ('profile', 'seed', 'data')})}, "
             f"git `{baseline.get('git')}`, recorded {baseline.get('created')}); this run git `{run.get('git')}`, "
             f"started {run.get('started')}.", "", f"{verdict} {summary_line(changes)}.", "",
             "A cell regresses when the studentised 95% CI of its paired per-image score change lies entirely beyond the "
             "metric's tolerance on the worse side, or when it errors where the baseline scored; a verdict that "
             "moved with a change inside the tolerance is *borderline* and does not fail the run.", ""]
    diffs = machine_differences(baseline.get("machine"), run.get("machine"))
    if diffs:
        lines += ["Other machine than the baseline's (information, not an error):", "",
                  *[f"- {d}" for d in diffs], ""]
    for status in STATUSES:
        rows = [[c.key, c.before, c.after, c.reason] for c in changes if c.status == status]
        if not rows or status in (UNCHANGED, NOT_RUN):
            continue
        lines += [f"## {status.capitalize()} ({len(rows)})", "",
                  tabulate(rows, headers=["cell or check", "baseline", "this run", "why"], tablefmt="github"), ""]
    return "\n".join(lines)


def write_comparison(changes: list[Change], out_dir: Path, baseline_path: str, baseline: dict, run: dict) -> list[Path]:
    """Write compare.md and compare.json into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    md, js = out_dir / "compare.md", out_dir / "compare.json"
    atomic_write_text(md, render_markdown(changes, baseline_path, baseline, run))
    atomic_write_json(js, {"baseline": baseline_path, "counts": counts(changes),
                           "regressed": fails(changes),
                           "changes": [asdict(c) for c in changes if c.status != UNCHANGED]})
    return [md, js]


def updated_baseline(old: dict | None, run: dict, cells: list[Cell], checks: dict[str, str], *,
                     registered: set[str] | None = None, models: dict | None = None) -> dict:
    """The new baseline: this run's cells and checks, plus the old baseline's cells this run did not
    select (while their method, metric and suite version still exist and they were graded on the same pinned
    weights and images), with the change recorded in ``history``. ``models``: the pinned models' entries."""
    new = build_baseline(run, cells, checks, models)
    history = []
    same_models = old is not None and weights_shas(old.get("models")) == weights_shas(new["models"]) \
        and old.get("samples") == new["samples"]
    if old is not None:
        changes = compare(old, cells, checks, registered=registered, samples=run.get("samples"))
        tally = counts(changes)
        for key, entry in old["cells"].items() if same_models else ():
            suite, metric, method = key.split("::")
            keep = (key not in new["cells"] and _metric(suite, metric) is not None
                    and PROPERTIES[suite].version == entry["suite_version"]
                    and (registered is None or method in registered))
            if keep:
                new["cells"][key] = entry
        for key, outcome in old["checks"].items() if same_models else ():
            new["checks"].setdefault(key, outcome)
        new["cells"] = dict(sorted(new["cells"].items()))
        new["checks"] = dict(sorted(new["checks"].items()))
        new["suites"] = {**{k: v for k, v in old.get("suites", {}).items()
                            if same_models and k in PROPERTIES and PROPERTIES[k].version == v.get("version")},
                         **new["suites"]}
        history = list(old.get("history", []))
        history.append({
            "recorded": run.get("started"), "git": run.get("git"), "previous_git": old.get("git"),
            "counts": {k: v for k, v in tally.items() if v},
            "changed": _capped([f"{c.key}: {c.before} → {c.after} ({c.status}: {c.reason})" for c in changes
                                if c.status in (REGRESSED, UNVERSIONED, IMPROVED, BORDERLINE, NOT_COMPARABLE, REMOVED)]
                               + [f"{tally[NEW]} new cell(s) or check(s)"] * bool(tally[NEW])
                               + ([] if same_models else ["models re-pinned: cells this run did not grade were dropped"])),
        })
    else:
        history.append({"recorded": run.get("started"), "git": run.get("git"), "counts": {NEW: len(cells) + len(checks)},
                        "changed": ["first baseline"]})
    new["history"] = history
    return new


def _capped(lines: list[str], limit: int = 40) -> list[str]:
    # The history lives in a tracked file: keep each entry short enough to read in a diff.
    return lines if len(lines) <= limit else [*lines[:limit], f"... {len(lines) - limit} more"]


def record_baseline(path: Path, old: dict | None, run: dict, cells: list[Cell], checks: dict[str, str], *,
                    registered: set[str] | None = None) -> dict:
    """Pin the run's model weights beside ``path``, then write the updated baseline there; return it.

    Weights first, JSON last (each atomic), so an interrupted update leaves the old baseline readable.
    """
    if not run.get("weights"):
        raise BaselineError("this run record names no model weights to pin (it was written before baselines pinned "
                            "their models, or no model was built); run the suites again and record from that run")
    models = pin_models(Path(path), run["weights"])
    new = updated_baseline(old, run, cells, checks, registered=registered, models=models)
    write_baseline(path, new)
    remove_unpinned(Path(path), models)
    return new


def write_baseline(path: Path, baseline: dict) -> Path:
    """Write a baseline atomically (a crash leaves the old file as it was)."""
    atomic_write_json(Path(path), baseline)
    return Path(path)

