"""Time a Kaggle-scale Dogs-vs-Cats folder through build_world: first load plus cache, then the cached load, with peak memory.

Usage: python benchmarks/kaggle_load.py [--n 25000] [--size 64] [--workers N] [--keep] [--root DIR]

N synthetic JPEGs (``cat.<i>.jpg`` / ``dog.<i>.jpg``, half each, 300-500 px sides, smooth colour fields
plus pixel noise, quality 75: about 20 KB each, near the real train.zip's mean of 22 KB) are written to a
temporary folder (or --root). Each phase runs in its own spawned process, so its peak RSS
(``ru_maxrss``) is that phase's alone; the times are of the ``build_world`` call in that process (imports
excluded). --workers is the number of processes that write the images; the loader itself decodes serially.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_WRITE_CHUNK = 250


def _write_chunk(folder: str, names: list[str], seed: int) -> int:
    """Write one chunk of synthetic photos; returns the bytes written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    total = 0
    for name in names:
        w, h = (int(v) for v in rng.integers(300, 501, 2))
        # A few random colours blown up bicubically give photo-like smooth regions; the noise gives JPEG's
        # entropy coder real work, so decoding costs about what a camera photo of that size costs.
        small = rng.integers(0, 256, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(base + rng.integers(-12, 13, base.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        path = Path(folder) / name
        Image.fromarray(noisy).save(path, "JPEG", quality=75)
        total += path.stat().st_size
    return total


def generate(folder: Path, n: int, workers: int) -> int:
    """Write n Kaggle-style JPEGs (cats first, then dogs) into folder; returns the total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    n_cat = n - n // 2
    names = [f"cat.{i}.jpg" for i in range(n_cat)] + [f"dog.{i}.jpg" for i in range(n - n_cat)]
    chunks = [names[i : i + _WRITE_CHUNK] for i in range(0, len(names), _WRITE_CHUNK)]
    jobs = [(str(folder), chunk, seed) for seed, chunk in enumerate(chunks)]
    if workers <= 1:
        return sum(_write_chunk(*job) for job in jobs)
    with mp.get_context("spawn").Pool(workers) as pool:
        return sum(pool.starmap(_write_chunk, jobs))


def _phase(root: str, cache_dir: str, size: int, queue) -> None:
    """One build_world call in this (spawned) process; puts seconds, peak RSS and the world's facts on queue."""
    from benchmark.data import DataSpec, build_world

    if "torch" in sys.modules:
        # The data path does not need torch; if something imported it, keep its thread pool off the loader's core.
        import torch

        torch.set_num_threads(1)
    spec = DataSpec(source="kaggle", root=root, image_size=size, n_train=0, n_test=0, seed=0)
    t0 = time.perf_counter()
    world = build_world(spec, cache_dir)
    seconds = time.perf_counter() - t0
    # Linux reports ru_maxrss in KiB (macOS in bytes; this script's figures assume Linux).
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({
        "seconds": seconds,
        "rss_mib": rss_kib / 1024,
        "cache_hit": world.cache_hit,
        "train": len(world.train_biased),
        "test": len(world.test),
        "arrays_mib": (world.path / "arrays.npz").stat().st_size / 2**20,
    })


def run_phase(root: Path, cache_dir: Path, size: int) -> dict:
    """Run _phase in a fresh spawned process and return what it measured."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_phase, args=(str(root), str(cache_dir), size, queue))
    proc.start()
    # Poll so that a phase process that dies before reporting (e.g. killed for memory) ends the script too.
    while True:
        try:
            result = queue.get(timeout=2)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise SystemExit(f"phase process died with exit code {proc.exitcode}") from None
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000, help="number of images (default 25000)")
    parser.add_argument("--size", type=int, default=64, help="image_size of the world (default 64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes writing the images (default: os.cpu_count())")
    parser.add_argument("--keep", action="store_true", help="keep the generated images and cache")
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    if args.n < 4:
        parser.error("--n must be at least 4 (two images per class)")

    work = args.root or Path(tempfile.mkdtemp(prefix="kaggle-load-"))
    images, cache = work / "train", work / "cache"
    try:
        t0 = time.perf_counter()
        total = generate(images, args.n, args.workers)
        t_gen = time.perf_counter() - t0
        print(f"wrote {args.n} JPEGs ({total / args.n / 1e3:.1f} KB mean, {total / 2**20:.0f} MiB) "
              f"to {images} in {t_gen:.1f} s")
        first = run_phase(images, cache, args.size)
        cached = run_phase(images, cache, args.size)
        if first["cache_hit"] or not cached["cache_hit"]:
            raise SystemExit("unexpected cache state: the first phase must build, the second must hit the cache")
        print(f"world: train {first['train']}, test {first['test']}, {args.size}px, "
              f"arrays.npz {first['arrays_mib']:.0f} MiB, {args.workers} writer(s), {os.cpu_count()} CPU(s)")
        print()
        print("| phase | seconds | peak RSS (MiB) |")
        print("|---|---|---|")
        for name, r in (("first load + cache", first), ("cached load", cached)):
            print(f"| {name} | {r['seconds']:.2f} | {r['rss_mib']:.0f} |")
        print()
        print(f"cached/first: {cached['seconds'] / first['seconds']:.3f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        elif args.root is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
