"""Retrain reproducibility: train the quick models twice with different weights, grade the grid on both builds, and
count how many property verdicts and cells change (issue 31, item 4).

Usage: python benchmarks/retrain_repro.py [--methods A,B] [--workers 2] [--cache-a DIR] [--cache-b DIR]
       [--threads-a 2] [--threads-b 1,2] [--retrain biased,control,absent] [--arch vit] [--model-seeds K]
       [--keep [DIR]] [--json PATH]
       python benchmarks/retrain_repro.py --compare REPORTS_A REPORTS_B

Build A is trained on --threads-a torch threads (or reused from --cache-a, trained however it was); build B starts
from A's data and untouched models and retrains the --retrain arms on the first of --threads-b whose weights differ
from A's (a thread count splits the float sums of training differently, so the weights differ in their last bits
and then diverge). With --arch vit both builds train the small vision transformer in place of the profile's CNN
(`benchmark build --arch vit`) and both grids grade it (`--bench-arch vit`); --model-seeds K trains and grades K
training seeds instead of the profile's. Both grids run `pytest suites/ --bench-fresh` on the CPU with the same
options and environment, and builds and grids all run from one snapshot of the checkout's code taken at the start,
so the weights are the only difference even when the checkout is edited meanwhile. Printed on stdout, as Markdown to paste into benchmarks/RESULTS.md: the
machine, both builds' model cards and weights' sha256, the grading times, and the comparison of the two leaderboards
(benchmark.regression.retrain): PASS <-> FAIL flips of property verdicts and of cells, moves between a decided
outcome and INCONCLUSIVE, other moves, with both runs' scores and skills (CI, pass level) for every change.
Progress goes to stderr. --compare compares two finished runs' reports folders and trains nothing.

Exit status: 0 when issue 31's targets hold (no property verdict flips between PASS and FAIL, at most 1% of the
cells), 1 when they do not or a step failed, 2 on bad input (one line saying what to fix).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.cache import atomic_write_json
from benchmark.errors import BenchmarkError, did_you_mean
from benchmark.models.parallel import SEQUENTIAL_ENV
from benchmark.regression.retrain import FLIP, compare, load_leaderboard, render_markdown
from benchmark.running.threads import child_env

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("biased", "control", "absent")
# What a build and a grid run: the package, the suites, and the pytest configuration and root conftest.
CODE = ("benchmark", "suites", "conftest.py", "pyproject.toml")
CELL_FLIPS_TARGET = 0.01  # issue 31: at most 1% of the cells flip between PASS and FAIL on a retrain


class Refused(BenchmarkError):
    """Bad input: the run stops before anything is trained, with this one line."""


class Failed(BenchmarkError):
    """A step of the measurement failed (a build, a grid, weights that would not differ)."""


@dataclass
class Build:
    """One trained world: its cache folder, the torch threads it was trained on, and its arms' model cards."""

    name: str
    cache: Path
    reused: bool = False  # a cache named on the command line, not one this run trained
    threads: str = ""  # what it was trained on: "2 threads", or "reused, threads unknown" for a reused build
    cards: dict[str, dict] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)  # arm -> "cache hit" / "trained in 48.2s on cpu"
    seconds: float = 0.0  # wall time of the build command
    graded_seconds: float = 0.0
    summary: str = ""  # pytest's last line for the grid


def threads_label(n: int) -> str:
    """'1 thread', '2 threads'."""
    return f"{n} thread{'s' if n != 1 else ''}"


def log(msg: str) -> None:
    """A progress line on stderr (stdout is the Markdown to paste)."""
    print(msg, file=sys.stderr, flush=True)


def parse_cards(text: str) -> tuple[dict[str, dict], dict[str, str]]:
    """The model cards `python -m benchmark build` prints ("NAME: header" then the card as JSON), and each header's
    provenance ("cache hit", "trained in ...")."""
    decoder, cards, how = json.JSONDecoder(), {}, {}
    for m in re.finditer(r"^([\w-]+): \S+ model [^:]+: ([^;]+);.*\n(?=\{)", text, re.M):
        cards[m.group(1)], _ = decoder.raw_decode(text, m.end())
        how[m.group(1)] = m.group(2)
    return cards, how


def build(b: Build, threads: int | None, code: Path, options: tuple[str, ...] = ()) -> None:
    """Build (or load) the quick world in ``b.cache`` on ``threads`` torch threads (None: the environment's), with
    the code snapshot in ``code`` and the build command's ``options`` (architecture, training seeds)."""
    # Every arm on ``threads`` threads: no side-by-side training processes on a share of them.
    env = code_env(code, {**(child_env(threads) if threads else {}), SEQUENTIAL_ENV: "1"})
    cmd = [sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--device", "cpu",
           "--cache-dir", str(b.cache), *options]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    b.seconds = time.perf_counter() - t0
    b.cards, b.how = parse_cards(proc.stdout)
    missing = [arm for arm in ARMS if "weights_sha256" not in b.cards.get(arm, {})]
    if proc.returncode != 0 or missing:
        raise Failed(f"build {b.name} in {b.cache} failed (exit {proc.returncode}; no card for "
                     f"{', '.join(missing) or 'none'}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
    # A reused cache whose models were all there was trained on a thread count nobody recorded.
    trained_here = any(h != "cache hit" for h in b.how.values())
    b.threads = threads_label(threads) if threads and (trained_here or not b.reused) else "reused, threads unknown"


def seed_names(cards: dict[str, dict], arms: list[str]) -> list[str]:
    """The card names of ``arms`` over every training seed: "biased", then "biased-seed1", ... (session.model_name)."""
    return [name for name in cards if name.split("-seed")[0] in arms and not name.startswith("contract-")]


def arm_dirs(cache: Path, cards: dict[str, dict], arms: list[str]) -> list[Path]:
    """The model folders in ``cache`` holding exactly the weights of ``arms`` (found by the sha256 on their cards)."""
    shas = {cards[arm]["weights_sha256"] for arm in arms}
    found = []
    for card in sorted((cache / "models").glob("*/card.json")):
        try:
            sha = json.loads(card.read_text(encoding="utf-8")).get("weights_sha256")
        except (OSError, ValueError):
            continue
        if sha in shas:
            found.append(card.parent)
    return found


def _link_or_copy(src: str, dst: str) -> None:
    # Cached data and weights are replaced, never edited in place, so a hard link is as safe as a copy and free.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def seed_from(a: Build, b: Build, retrain: list[str]) -> None:
    """Give B's cache A's data and every model of A's cache except the arms B retrains."""
    skip = {p.name for p in arm_dirs(a.cache, a.cards, seed_names(a.cards, retrain))}
    ignore = shutil.ignore_patterns("*.lock")
    shutil.copytree(a.cache / "datasets", b.cache / "datasets", ignore=ignore, copy_function=_link_or_copy,
                    dirs_exist_ok=True)
    for model in sorted((a.cache / "models").iterdir()):
        if model.is_dir() and model.name not in skip:
            shutil.copytree(model, b.cache / "models" / model.name, ignore=ignore, copy_function=_link_or_copy,
                            dirs_exist_ok=True)


def retrain(a: Build, b: Build, arms: list[str], thread_counts: list[int], code: Path,
            options: tuple[str, ...] = ()) -> None:
    """Build B on the first thread count whose weights of every retrained arm differ from A's."""
    for threads in thread_counts:
        log(f"build B: retraining {', '.join(arms)} on {threads_label(threads)} in {b.cache}")
        build(b, threads, code, options)
        same = [name for name in seed_names(b.cards, arms)
                if b.cards[name]["weights_sha256"] == a.cards.get(name, {}).get("weights_sha256")]
        if not same:
            return
        log(f"  {threads_label(threads)} reproduced A's {', '.join(same)} weights bit for bit; trying the next count")
        for folder in arm_dirs(b.cache, b.cards, seed_names(b.cards, arms)):
            shutil.rmtree(folder)
    raise Failed(f"every --threads-b count ({', '.join(map(str, thread_counts))}) reproduced build A's weights bit "
                 "for bit: name another thread count, or train A here (leave out --cache-a)")


def grade(b: Build, out: Path, methods: str | None, workers: int, code: Path, options: tuple[str, ...] = ()) -> None:
    """The grid on build ``b``'s models with the code snapshot in ``code`` and pytest's ``options`` (architecture,
    training seeds), afresh, reports in ``out`` (its exit status is pytest's: the controls' FAIL cells fail tests)."""
    cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--bench-profile", "quick",
           "--bench-device", "cpu", "--bench-cache-dir", str(b.cache), "--bench-reports-dir", str(out),
           "--bench-fresh"]
    cmd += ["-n", str(workers)] if workers > 1 else []
    cmd += ["--bench-methods", methods] if methods else []
    cmd += options
    env = {k: v for k, v in code_env(code).items() if k != "SHORTCUT_BENCH_FRESH"}  # --bench-fresh says it
    log(f"grading build {b.name}: {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    b.graded_seconds = time.perf_counter() - t0
    b.summary = (proc.stdout.strip().splitlines() or [""])[-1].strip("= ")
    if not (out / "leaderboard.json").is_file():
        raise Failed(f"grid on build {b.name} wrote no leaderboard (exit {proc.returncode}): "
                     f"{(proc.stdout[-2000:] + proc.stderr[-1500:]).strip()}")
    run = json.loads((out / "run.json").read_text(encoding="utf-8")) if (out / "run.json").is_file() else {}
    graded = run.get("run", {}).get("models", {})
    for arm in ARMS:
        sha = graded.get(arm, {}).get("weights_sha256")
        if sha is not None and sha != b.cards[arm]["weights_sha256"]:
            raise Failed(f"grid on build {b.name} graded other {arm} weights ({sha[:12]}) than the build's "
                         f"({b.cards[arm]['weights_sha256'][:12]})")


def snapshot_code(dest: Path) -> str:
    """Copy the checkout's code (CODE) to ``dest``, where both builds and both grids run, so an edit to the checkout
    while they run (25 minutes on the full grid) cannot grade one build with other code; its sha256 (.py files)."""
    for name in CODE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, dest / name)
    h = hashlib.sha256()
    for path in sorted(dest.rglob("*.py")):
        h.update(path.relative_to(dest).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def code_env(code: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that runs from the code snapshot: its folder first on the import path (ahead of
    the checkout's editable install, which Python consults after the path), then ``extra``."""
    path = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def cards_table(builds: list[Build]) -> str:
    """Both builds' model cards: training threads, weights, accuracy and flip rates, provenance."""
    lines = ["| build | arm | trained on | weights sha256 | clean acc | flip rate | mean p(dog) on flips | "
             "model |", "|---|---|---|---|---|---|---|---|"]
    for b in builds:
        for arm in seed_names(b.cards, list(ARMS)):
            c = b.cards[arm]
            lines.append(f"| {b.name} | {arm} | {b.threads} | `{c['weights_sha256'][:12]}` | "
                         f"{c['clean_accuracy']:.1%} | {c['flip_rate']:.1%} | {c['mean_p_dog_on_flips']:.2f} | "
                         f"{b.how.get(arm, '?')} |")
    return "\n".join(lines)


def weights_line(a: Build, b: Build) -> str:
    """Which arms' weights differ between the builds (by sha256)."""
    names = seed_names(a.cards, list(ARMS))
    differ = [n for n in names if a.cards[n]["weights_sha256"] != b.cards.get(n, {}).get("weights_sha256")]
    same = [n for n in names if n not in differ]
    return (f"Weights (sha256) differ for {', '.join(differ) or 'no arm'}"
            + (f"; {', '.join(same)} the same file in both (not retrained)." if same else "."))


def target_line(result) -> tuple[bool, str]:
    """Whether issue 31's targets hold, and the sentence that says so."""
    props, cells = len(result.properties.of(FLIP)), len(result.cells.of(FLIP))
    share = cells / result.cells.compared if result.cells.compared else 0.0
    met = props == 0 and share <= CELL_FLIPS_TARGET
    return met, (f"Issue 31's targets (0 property verdicts flip between PASS and FAIL; at most "
                 f"{CELL_FLIPS_TARGET:.0%} of cells): **{'met' if met else 'not met'}** ({props} property "
                 f"verdict(s), {cells} of {result.cells.compared} cells, {share:.1%}).")


def header(args, a: Build, b: Build) -> str:
    """The Markdown section's title and the line naming machine, code, methods and grid options."""
    load = os.getloadavg()
    return (f"### Retrain reproducibility, quick profile: build A ({a.threads}) against build B "
            f"({b.threads})\n\n`python benchmarks/retrain_repro.py {args.command_line}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()}, {os.cpu_count()} CPUs, load "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; git `{args.git}` at the snapshot; methods: "
            f"{args.methods or 'all'}; models: {args.arch or 'the profile' + chr(39) + 's CNN'}; grids `pytest "
            f"suites/ --bench-fresh{''.join(' ' + o for o in grid_options(args))}` on the CPU, "
            f"{f'-n {args.workers}' if args.workers > 1 else 'in one process'}.")


def _counts(text: str, option: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise Refused(f"{option} takes thread counts >= 1, comma-separated (e.g. 1,2), got {text!r}")
    return counts


def check_methods(text: str | None) -> None:
    """Refuse an unknown method name before anything trains (the grid would refuse it only after)."""
    if not text:
        return
    from benchmark.methods import all_methods

    names = all_methods()
    for name in (n.strip() for n in text.split(",")):
        if name not in names:
            raise Refused(f"--methods: unknown method {name!r}.{did_you_mean(name, names)} "
                          "`python -m benchmark list methods` lists them")


def check_cache(path: str, option: str) -> Path:
    """A cache folder to reuse: it must hold trained models (else the run would train them unasked)."""
    cache = Path(path).expanduser()
    if not any((cache / "models").glob("*-biased-*/card.json")):
        raise Refused(f"{option} {cache}: no trained models in {cache / 'models'} (build them with `python -m "
                      f"benchmark build --profile quick --cache-dir {cache}`, or leave {option} out to train here)")
    return cache


def work_folder(keep: str | None) -> tuple[Path, bool]:
    """The folder for builds and reports, and whether it stays: --keep DIR (new or empty), --keep (a temporary
    folder that stays), else a temporary folder removed at the end."""
    if keep:
        folder = Path(keep).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise Refused(f"--keep {folder}: already holds files; name a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        return folder, True
    return Path(tempfile.mkdtemp(prefix="retrain-repro-")), keep is not None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (thread counts, arms, workers) before anything runs."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None, help="comma-separated subset (default: every method)")
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per grid (default 2; 1: in-process)")
    p.add_argument("--cache-a", default=None, help="reuse this build as A (e.g. /tmp/qc; default: train A here)")
    p.add_argument("--cache-b", default=None, help="reuse this build as B (its weights must differ from A's)")
    p.add_argument("--threads-a", default="2", help="torch threads to train A on (default 2)")
    p.add_argument("--threads-b", default="1,2", help="thread counts to train B on, the first whose weights differ "
                                                       "from A's is kept (default 1,2)")
    p.add_argument("--retrain", default=",".join(ARMS), help="the arms B retrains; the others are A's files "
                                                              "(default: all three)")
    p.add_argument("--arch", choices=("vit",), default=None,
                   help="train and grade the small vision transformer in place of the profile's CNN")
    p.add_argument("--model-seeds", type=int, default=None, metavar="K",
                   help="train and grade K training seeds (default: the profile's)")
    p.add_argument("--keep", nargs="?", const="", default=None, metavar="DIR",
                   help="keep the builds and reports (in DIR, new or empty; alone: a temporary folder, printed)")
    p.add_argument("--json", default=None, help="also write the counts, every change and both builds' cards here")
    p.add_argument("--compare", nargs=2, default=None, metavar=("REPORTS_A", "REPORTS_B"),
                   help="compare two finished runs' leaderboards and train nothing")
    args = p.parse_args(argv)
    args.threads_a = _counts(args.threads_a, "--threads-a")[0]
    args.threads_b = _counts(args.threads_b, "--threads-b")
    args.retrain = [a.strip() for a in args.retrain.split(",") if a.strip()]
    if not args.retrain or set(args.retrain) - set(ARMS):
        raise Refused(f"--retrain takes arms among {', '.join(ARMS)}, got {','.join(args.retrain) or 'none'}")
    if args.model_seeds is not None and args.model_seeds < 1:
        raise Refused(f"--model-seeds must be >= 1, got {args.model_seeds}")
    if args.workers < 1:
        raise Refused(f"--workers must be >= 1, got {args.workers}")
    if args.json and not Path(args.json).expanduser().parent.is_dir():
        raise Refused(f"--json {args.json}: its folder does not exist")
    # Checked here, before a work folder is made or anything trains.
    args.cache_a = args.cache_a and check_cache(args.cache_a, "--cache-a")
    args.cache_b = args.cache_b and check_cache(args.cache_b, "--cache-b")
    args.command_line = " ".join(sys.argv[1:] if argv is None else argv)
    return args


def build_options(args) -> tuple[str, ...]:
    """What ``benchmark build`` is told of the architecture and the training seeds."""
    return (*(("--arch", args.arch) if args.arch else ()),
            *(("--model-seeds", str(args.model_seeds)) if args.model_seeds else ()))


def grid_options(args) -> tuple[str, ...]:
    """The same for the grids' pytest."""
    return tuple(o.replace("--", "--bench-", 1) if o.startswith("--") else o for o in build_options(args))


def builds(args, work: Path) -> tuple[Build, Build]:
    """Build A (trained here or reused) and B (retrained here or reused); refuse weights that do not differ."""
    a = Build("A", args.cache_a or work / "cache-a", reused=bool(args.cache_a))
    log(f"build A in {a.cache}")
    build(a, args.threads_a, args.code, build_options(args))
    if args.cache_b:
        b = Build("B", args.cache_b, reused=True)
        build(b, None, args.code, build_options(args))
    else:
        b = Build("B", work / "cache-b")
        seed_from(a, b, args.retrain)
        retrain(a, b, args.retrain, args.threads_b, args.code, build_options(args))
    if all(a.cards[arm]["weights_sha256"] == b.cards[arm]["weights_sha256"] for arm in ARMS):
        raise Failed(f"builds A ({a.cache}) and B ({b.cache}) hold the same weights: nothing to compare")
    return a, b


def measure(args, work: Path) -> tuple[str, dict, bool]:
    """Build, grade and compare; the Markdown report, the JSON record and whether the targets hold."""
    args.code = work / "code"
    from benchmark.reporting.report import git_hash

    args.git = git_hash(ROOT)  # the commit the snapshot was taken from, not the checkout's when the runs end
    code = snapshot_code(args.code)
    a, b = builds(args, work)
    log(weights_line(a, b))
    for x in (a, b):
        grade(x, work / f"reports-{x.name.lower()}", args.methods, args.workers, args.code, grid_options(args))
    result = compare(load_leaderboard(work / "reports-a"), load_leaderboard(work / "reports-b"))
    met, target = target_line(result)
    names = (f"A ({a.threads})", f"B ({b.threads})")
    what = "reused" if b.reused else f"{', '.join(args.retrain)} retrained"
    times = (f"Build B took {b.seconds:.0f} s ({what}); grids: A {a.graded_seconds:.0f} s ({a.summary}), "
             f"B {b.graded_seconds:.0f} s ({b.summary}).")
    same_code = (f"Both builds and both grids ran one snapshot of the checkout's code ({', '.join(CODE)}; sha256 of "
                 f"its .py files `{code[:12]}`).")
    text = "\n\n".join([header(args, a, b), cards_table([a, b]), weights_line(a, b), same_code, times, target,
                        render_markdown(result, names).rstrip()])
    record = {**result.as_dict(), "targets_met": met, "methods": args.methods, "code_sha256": code,
              "builds": {x.name: {"cache": str(x.cache), "threads": x.threads, "cards": x.cards, "how": x.how,
                                  "graded_seconds": x.graded_seconds} for x in (a, b)}}
    return text + "\n", record, met


def compare_only(paths: list[str]) -> tuple[str, dict, bool]:
    """--compare: two finished runs' leaderboards, nothing trained or graded."""
    result = compare(load_leaderboard(paths[0]), load_leaderboard(paths[1]))
    met, target = target_line(result)
    return f"{target}\n\n{render_markdown(result, (paths[0], paths[1]))}", {**result.as_dict(), "targets_met": met}, met


def main(argv: list[str] | None = None) -> int:
    """Run the measurement (or --compare) and print it; the exit status says whether the targets hold."""
    try:
        args = parse_args(argv)
        if args.compare:
            text, record, met = compare_only(args.compare)
        else:
            check_methods(args.methods)
            work, keep = work_folder(args.keep)
            try:
                text, record, met = measure(args, work)
            finally:
                if keep:
                    log(f"builds and reports kept in {work}")
                else:
                    shutil.rmtree(work, ignore_errors=True)
    except BenchmarkError as exc:  # bad input (a missing or malformed leaderboard too) is 2, a failed step 1
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, Failed) else 2
    if args.json:
        atomic_write_json(Path(args.json), record)
    print(text, end="")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
