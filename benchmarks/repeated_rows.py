"""How many of the grid's model rows repeat one computed before: the premise of any further saving by fewer passes.

The bench's floor (``quantus_vs_bench.py``) prices the passes the bench makes, each image at the cheapest way and batch
size measured. Plain Quantus over that floor bounds the ratio against plain Quantus that faster execution alone can
reach; beyond it only fewer model rows, or rows cheaper than any way the floor measures, can go. One kind of fewer rows
is a row (one input image) forwarded again through a model with the same weights: a memo of single rows answers it
exactly where the row was first computed the same way (``benchmark.models.row_memo`` answers the rows a fused copy or
the region way computed; a row first forwarded by the eager model has other bits), so what this counts now is what that
memo leaves. This script grades the whole grid as ``quantus_vs_bench.py --bench-only`` does (b),
one process, and hashes every row of every outermost model forward whose input is a batch of images: the model's
weights (their values; a fused copy counts as the model it was fused from, a region forward as its model) and the
row's bytes. A row met before under the same weights is a repeat; a row through a method's hooks (Captum's layer
methods, Zennit's rules, guided ReLUs) is another computation and is not compared.

Printed: per property, per method (most repeated floor first) and per kind of pass (with or without gradients), the
rows, the repeated rows, and their share of the floor at the cheapest per-image cost measured before the grid; and the
factor by which removing every repeat would raise the bound above. A repeat with gradients is counted apart: its
forward repeats, but its backward depends on the target and on what the method differentiates, so a row memo could not
answer it. Forwards of inner parts of a model (the region way's stages, a layer method's head) are not image batches
and are not counted; their share of the floor is printed. Last, the no-grad rows through weights other than the graded
models' (MPRT's randomised copies), an upper bound of what reusing a copy's unchanged lower layers could save.

Usage: python benchmarks/repeated_rows.py [--profile quick] [--cache-dir DIR] [--methods A,B | all]
       [--metrics M,N | all] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
import weakref
from pathlib import Path

import torch
import xxhash
from torch.nn.modules import module as module_mod

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantus_vs_bench import cost_tables, grid_of  # noqa: E402

from benchmark.grading.grader import Grader, grade_cell  # noqa: E402
from benchmark.methods import get_method  # noqa: E402
from benchmark.methods.base import hook_count  # noqa: E402
from benchmark.models import fused  # noqa: E402
from benchmark.models.row_memo import row_digests  # noqa: E402
from benchmark.options import BenchOptions  # noqa: E402
from benchmark.running.timing import ModelComputeTimer, arch_of, fastest_floor_seconds  # noqa: E402
from benchmark.session import prepare  # noqa: E402


def weights_key(module: torch.nn.Module) -> bytes:
    """XXH3 of a module's class, mode and tensors' values (not their layout: a channels-last copy computes the same
    function up to rounding)."""
    h = xxhash.xxh3_128()
    h.update(f"{arch_of(module)}|{module.training}|".encode())
    for t in [*module.parameters(), *module.buffers()]:
        h.update(t.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.digest()


class RowLedger:
    """Global forward hooks that hash each row of every outermost image-batch forward and count the repeats, by the
    (property, method) being graded and the kind of pass."""

    def __init__(self, image_shape: tuple):
        self.image_shape = tuple(image_shape)
        self.seen: set[bytes] = set()
        # (property, method, arch, gradients on, the region way) -> [rows compared, repeated rows, rows not compared
        # (through a method's hooks, or a graph of unknown weights), rows not repeated through weights other than the
        # graded models' (MPRT's randomised copies)]
        self.rows: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
        self.graded: set[bytes] = set()  # the graded models' weights keys
        self.where = ("-", "-")
        self.graph_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # fused graph -> its model's key
        self._depth = 0
        self.seconds = 0.0  # spent hashing, outside no clock of the grid's (reported)

    def _pre(self, module, args) -> None:
        self._depth += 1
        if self._depth != 1 or not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            return
        t0 = time.perf_counter()
        region = getattr(getattr(module, "whole", None), "model", None)  # a region forward: its model's weights
        source = module if region is None else region
        counts = self.rows[(*self.where, arch_of(module), torch.is_grad_enabled(), region is not None)]
        frozen = isinstance(source, torch.jit.ScriptModule) and not list(source.parameters())
        hooked = not isinstance(source, torch.jit.ScriptModule) and hook_count(source)
        key = self.graph_keys.get(source) if frozen else None  # a frozen graph's weights are constants inside it
        # A method's hooks (Captum's layer methods, Zennit's rules, guided ReLUs) make another computation than the
        # bare model's, and a graph fused before the ledger began has unknown weights: neither is compared.
        if hooked or (frozen and key is None):
            counts[2] += len(x)
            self.seconds += time.perf_counter() - t0
            return
        key = key or weights_key(source)
        for row_digest in row_digests(x.detach().cpu()):
            digest = row_digest + key
            counts[0] += 1
            if digest in self.seen:
                counts[1] += 1
            else:
                self.seen.add(digest)
                counts[3] += key not in self.graded
        self.seconds += time.perf_counter() - t0

    def _post(self, module, args, output) -> None:
        self._depth = max(0, self._depth - 1)

    def __enter__(self) -> RowLedger:
        self._handles = [module_mod.register_module_forward_pre_hook(self._pre),
                         module_mod.register_module_forward_hook(self._post, always_call=True)]
        original = fused.fuse_module
        ledger = self

        def fuse_module(model):
            graph = original(model)
            ledger.graph_keys[graph] = weights_key(model)  # the graph's tensors are frozen into it: key its source
            return graph

        self._original = original
        fused.fuse_module = fuse_module
        return self

    def __exit__(self, *exc) -> bool:
        fused.fuse_module = self._original
        for h in self._handles:
            h.remove()
        return False


def _priced(ledger: RowLedger, cheapest: dict, by: int | None) -> dict:
    """{group: [rows, repeated rows, rows not compared, floor of the rows, floor of the repeats without gradients, of
    those with, of the repeats without gradients that ran the region way]}, grouped by position ``by`` of the ledger's
    key (None: everything)."""
    out: dict = collections.defaultdict(lambda: [0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for (prop, method, arch, grad, region), (rows, repeats, uncompared, copies) in ledger.rows.items():
        group = "all" if by is None else (prop, method)[by]
        cost = cheapest.get(arch, {}).get(grad, 0.0)
        mine = out[group]
        mine[0] += rows + uncompared
        mine[1] += repeats
        mine[2] += uncompared
        mine[3] += (rows + uncompared) * cost
        mine[5 if grad else 4] += repeats * cost
        mine[6] += repeats * cost if region and not grad else 0.0
        mine[7] += copies * cost if not grad else 0.0
    return out


def _share(seconds: float, floor: float) -> str:
    return f"{100 * seconds / floor:5.1f} %" if floor > 0 else "  -  "


def _table(what: str, groups: dict, floors: dict) -> None:
    print(f"  per {what}: rows counted | repeated | not compared | floor of all passes | floor of the repeated rows "
          "without gradients (share; of it, the region way's) | with gradients (share)")
    for name, (rows, repeats, uncompared, _, no_grad, grad, region, _) in sorted(groups.items(),
                                                                               key=lambda kv: -kv[1][4]):
        floor = floors.get(name, 0.0)
        print(f"    {name:<26} {rows:8d} | {repeats:7d} | {uncompared:7d} | {floor:6.1f}s | {no_grad:5.1f}s "
              f"({_share(no_grad, floor)}; {region:5.1f}s) | {grad:5.1f}s ({_share(grad, floor)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--methods", default="all", help="comma-separated, or 'all' (default)")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names, or 'all' (default: voting)")
    parser.add_argument("--cache-dir", default=os.environ.get("SHORTCUT_BENCH_CACHE", "."))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile, _, names, cells = grid_of(args)
    bench = prepare(profile, BenchOptions(cache_root=Path(args.cache_dir), seed=args.seed, model_seeds=1),
                    progress=False)
    names = [n for n in names if not get_method(n).unsupported(bench.biased.model)]
    grader = Grader(bench, seed=args.seed)
    x = grader.images.sample_set.x
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{len(names)} methods x {len(cells)} metrics, profile {profile.name}", flush=True)
    _, cheapest, _ = cost_tables([grader.store.models["biased"]], tuple(x.shape[1:]), [2**k for k in range(9)])
    floors_by = {0: collections.Counter(), 1: collections.Counter(), None: collections.Counter()}
    t0 = time.perf_counter()
    with RowLedger(tuple(x.shape[1:])) as ledger:
        ledger.graded = {weights_key(m) for m in grader.store.models.values()}
        for method in names:
            for prop, metric in cells:
                ledger.where = (prop.key, method)
                with ModelComputeTimer() as timer:
                    grade_cell(grader, prop, metric, method)
                floor = fastest_floor_seconds(timer.passes, cheapest)
                for by, name in ((0, prop.key), (1, method), (None, "all")):
                    floors_by[by][name] += floor
            print(f"  {method} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    print(f"graded in {time.perf_counter() - t0:.1f}s, of which hashing rows {ledger.seconds:.1f}s")
    costs = ", ".join(f"{arch} {'with gradients' if g else 'forward'} {1e3 * s:.3f} ms"
                      for arch, kinds in cheapest.items() for g, s in kinds.items())
    print(f"cheapest per-image costs measured before the grid: {costs}")
    for by, what in ((0, "property"), (1, "method")):
        _table(what, _priced(ledger, cheapest, by), floors_by[by])
    rows, repeats, uncompared, counted, no_grad, grad, region, copies = _priced(ledger, cheapest, None)["all"]
    total = floors_by[None]["all"]
    if total <= 0:
        print("all: no model passes in this grid, so nothing to repeat")
        return 0
    print(f"all: {rows} rows counted, {repeats} repeated, {uncompared} not compared (through a method's hooks, or a fused "
          "graph of unknown weights); "
          f"floor of all passes {total:.1f}s, of the counted rows {counted:.1f}s (the rest: inner forwards, not "
          f"counted); repeated rows {no_grad:.1f}s without gradients ({100 * no_grad / total:.1f} %; {region:.1f}s of "
          f"it ran the region way, below the floor's price), {grad:.1f}s with ({100 * grad / total:.1f} %)")
    if total > no_grad:
        print(f"removing every repeat without gradients would multiply the bound of plain Quantus over the floor by "
              f"{total / (total - no_grad):.3f}; every repeat, gradients too, by {total / (total - no_grad - grad):.3f}")
        # What reusing a randomised copy's unchanged layers could save is below all of its rows' cost: the last state
        # of MPRT's cascade changes every layer, and no layer of a gradient pass can be skipped.
        print(f"rows without gradients, not repeats, through weights other than the graded models' (MPRT's randomised "
              f"copies, every way): {copies:.1f}s of the floor; with every repeat and all of those gone (an upper "
              f"bound of reusing a copy's unchanged layers) the bound would rise by "
              f"{total / (total - no_grad - grad - copies):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
