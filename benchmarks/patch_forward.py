"""Could a forward pass recompute only what a patch perturbation changed? Its premises, and the one built, measured here.

Occlusion, FeatureAblation and FeaturePermutation forward copies of an image that differ from it in one patch, and
each copy runs the whole CNN, though a 4×4 patch changes only a small region of the early layers' outputs. A forward
that recomputed only that region (each layer on a crop with its halo, the rest of the image's activations reused) saves
work only if (1) a convolution on a crop gives the same bits as the whole image's convolution at those positions, so
the maps stay exact, and (2) the crops' convolutions cost much less than the whole forward at the batch sizes used.

1. Bits: for each of the quick SmallCNN's four convolutions (its shapes, random weights, a batch of 64), every 4×4 block
   of outputs computed on its crop (input rows and columns with a one-pixel halo, from the zero-padded input, so the
   border blocks are covered) against the same positions of the whole convolution with the model's own padding, both
   as PyTorch runs it on channels-last tensors and through the fused copy's kernel
   (``benchmark.models.fused.fuse_module`` of convolution + BatchNorm + ReLU).
2. Cost: 64 copies of a 32 px image, each with one of FeatureAblation's 64 patches grey, through the fused copy of the
   whole model, against the fused convolutions of the regions the patch changes (each stage's crop, the size of the
   largest, batched) plus one copy per stage of the image's activations for each row (what pasting the regions into
   the unchanged activations must at least write). Interleaved, the fastest of ``--repeats``. This is a lower bound on
   such a forward's cost: it leaves out the bookkeeping that gathers each crop from the pasted activations.

3. The region forward as built (``benchmark.methods._region``): the maps of Occlusion, FeatureAblation and
   FeaturePermutation on ``--images`` images of the same model (fused, channels-last, as the grader's copies), the
   region way and the whole way (the fused forward alone) interleaved, the fastest of ``--map-repeats`` each, and
   whether the maps are identical.

4. The premise of a chained region way for the cumulative removals (RegionPerturbation and Selectivity remove one patch
   more per step, IROF one superpixel more): a step's ``--steps-images`` images each differ from their previous step in
   one patch, so a chain would run each step as the region forward runs a batch of one-patch copies of distinct images.
   Timed: the built region forward's logits (``RegionPlan.logits``) for one such step against the whole fused forward
   of the same images, interleaved, the fastest of ``--repeats``, at 4, 6 and 8 px patches. A lower bound on a chain's
   step: it leaves out writing the step's activations for the next step.

Usage: python benchmarks/patch_forward.py [--threads 1] [--repeats 20] [--images 64] [--map-repeats 3] [--steps-images 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.arch import SmallCNN
from benchmark.models.fused import fuse_module

PATCH, SIZE, BATCH = 4, 32, 64
# Each stage's output crop for a 4×4 patch (a 3×3 convolution grows the changed region by one pixel on each side; a
# 2×2 max-pool halves it, rounded out to whole pooling windows), and whether a max-pool follows.
STAGES = ((0, 6, False), (3, 8, True), (7, 6, True), (11, 6, False))


def _block(conv: nn.Conv2d, norm: nn.Module, padding: int = 0) -> nn.Module:
    """Convolution + BatchNorm + ReLU, as the model runs them; without padding, a crop brings its own halo."""
    twin = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=padding, bias=conv.bias is not None)
    twin.load_state_dict(conv.state_dict())
    return nn.Sequential(twin, norm, nn.ReLU()).eval()


def _model() -> SmallCNN:
    """The quick CNN with random weights and BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.to(memory_format=torch.channels_last)


def crop_bits(model: SmallCNN) -> list[str]:
    """Per convolution: 4×4 output blocks equal bit for bit on their crops of the zero-padded input, plain and fused,
    against the whole image's convolution with the model's own padding."""
    lines, size = [], SIZE
    for index, _, pooled in STAGES:
        conv, norm = model.features[index], model.features[index + 1]
        x = torch.rand(BATCH, conv.in_channels, size, size).contiguous(memory_format=torch.channels_last)
        padded = F.pad(x, (1, 1, 1, 1))
        on_crop = fuse_module(_block(conv, norm).to(memory_format=torch.channels_last))
        on_image = fuse_module(_block(conv, norm, padding=1).to(memory_format=torch.channels_last))
        with torch.no_grad():
            whole = (F.conv2d(x, conv.weight, conv.bias, padding=1), on_image(x))
            same = [0, 0]
            blocks = [(r, c) for r in range(0, size - 3, 2) for c in range(0, size - 3, 2)]
            for r, c in blocks:
                crop = padded[:, :, r : r + 6, c : c + 6].contiguous(memory_format=torch.channels_last)
                parts = (F.conv2d(crop, conv.weight, conv.bias), on_crop(crop))
                for k in range(2):
                    same[k] += torch.equal(parts[k], whole[k][:, :, r : r + 4, c : c + 4])
        lines.append(f"  features.{index} ({conv.in_channels}->{conv.out_channels} at {size} px): "
                     f"{same[0]}/{len(blocks)} blocks equal plain, {same[1]}/{len(blocks)} fused")
        size //= 2 if pooled else 1
    return lines


def _ablated(x0: torch.Tensor) -> torch.Tensor:
    """64 copies of ``x0`` (1,3,H,W), copy k with FeatureAblation's patch k grey."""
    rows = []
    for r in range(0, SIZE, PATCH):
        for c in range(0, SIZE, PATCH):
            x = x0.clone()
            x[:, :, r : r + PATCH, c : c + PATCH] = 0.5
            rows.append(x)
    return torch.cat(rows).contiguous(memory_format=torch.channels_last)


def _region_pass(blocks: list, crops: list[torch.Tensor], canvases: list[torch.Tensor]) -> None:
    """The changed regions' convolutions, and one write per row of each stage's activations."""
    for block, crop, canvas in zip(blocks, crops, canvases):
        out = block(crop)
        canvas.expand(BATCH, -1, -1, -1).clone(memory_format=torch.channels_last)
        del out


def cost(model: SmallCNN, repeats: int) -> tuple[float, float]:
    """(fastest whole fused forward, fastest region convolutions + activation copies) of one ablated batch."""
    whole = fuse_module(model)
    x = _ablated(torch.rand(1, 3, SIZE, SIZE))
    blocks, crops, canvases, size = [], [], [], SIZE
    for index, out, pooled in STAGES:
        conv, norm = model.features[index], model.features[index + 1]
        blocks.append(fuse_module(_block(conv, norm).to(memory_format=torch.channels_last)))
        crops.append(torch.rand(BATCH, conv.in_channels, out + 2, out + 2).contiguous(
            memory_format=torch.channels_last))
        canvases.append(torch.rand(1, conv.out_channels, size, size).contiguous(memory_format=torch.channels_last))
        size //= 2 if pooled else 1
    times = ([], [])
    with torch.no_grad():
        whole(x)
        _region_pass(blocks, crops, canvases)
        for _ in range(repeats):
            for k, run in enumerate((lambda: whole(x), lambda: _region_pass(blocks, crops, canvases))):
                start = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def maps(model: SmallCNN, images: int, repeats: int) -> list[str]:
    """Per one-patch method: the fastest map time the whole way and the region way, and whether the maps are equal."""
    from benchmark.methods import _captum, explain
    from benchmark.models import fused

    fused.allow(model)
    x = torch.rand(images, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    y = torch.arange(images) % 2
    region = _captum.region_forward
    ways = {"whole": lambda model, forward, inputs: forward, "region": region}
    lines = []
    try:
        for method in ("Occlusion", "FeatureAblation", "FeaturePermutation"):
            times, out = {way: [] for way in ways}, {}
            for _ in range(repeats):
                for way, choose in ways.items():
                    _captum.region_forward = choose
                    start = time.perf_counter()
                    out[way] = explain(method, model, x, y)
                    times[way].append(time.perf_counter() - start)
            whole, fast = min(times["whole"]), min(times["region"])
            lines.append(f"  {method}: whole {whole:.3f} s, region {fast:.3f} s, {whole / fast:.2f}x; maps "
                         f"{'identical' if out['whole'].tobytes() == out['region'].tobytes() else 'DIFFER'}")
    finally:
        _captum.region_forward = region
    return lines


def chained_step(model: SmallCNN, images: int, repeats: int) -> list[str]:
    """Per patch size: the fastest whole fused forward of ``images`` images against the region forward's logits of the
    same images, each differing from its own base in one patch, and whether the logits are equal."""
    from benchmark.methods._region import RegionPlan

    whole = fuse_module(model)
    plan = RegionPlan(model)
    gen = torch.Generator().manual_seed(2)
    bases = torch.rand(images, 3, SIZE, SIZE, generator=gen).contiguous(memory_format=torch.channels_last)
    lines = []
    with torch.no_grad():
        maps = plan.base_maps(bases)
        for side in (4, 6, 8):
            top = torch.randint(0, SIZE - side + 1, (images,), generator=gen)
            left = torch.randint(0, SIZE - side + 1, (images,), generator=gen)
            x = bases.clone()
            for n in range(images):
                x[n, :, top[n] : top[n] + side, left[n] : left[n] + side] = 0.5
            box = (top, top + side, left, left + side)
            rows = torch.arange(images)
            runs = (lambda x=x: whole(x), lambda x=x, rows=rows, box=box: plan.logits(x, rows, box, maps))
            times = ([], [])
            for _ in range(repeats + 1):  # the first of each way warms it up and is not counted
                for k, run in enumerate(runs):
                    start = time.perf_counter()
                    run()
                    times[k].append(time.perf_counter() - start)
            fast, slow = min(times[1][1:]), min(times[0][1:])
            same = torch.equal(runs[0](), runs[1]())
            lines.append(f"  {side}x{side} patch: whole {slow * 1e3:.2f} ms, region {fast * 1e3:.2f} ms, "
                         f"{slow / fast:.2f}x; logits {'identical' if same else 'DIFFER'}")
    return lines


def main(argv=None) -> int:
    """Print the premises and the region forward's measurements, sections 1-4."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--map-repeats", type=int, default=3)
    ap.add_argument("--steps-images", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}, torch threads {args.threads}, torch {torch.__version__}")
    model = _model()
    print("1. a convolution on a crop against the whole image's, at the same positions (batch 64):")
    for line in crop_bits(model):
        print(line)
    whole, region = cost(model, args.repeats)
    print(f"2. 64 one-patch copies of a {SIZE} px image: whole fused forward {whole * 1e3:.2f} ms, changed regions' "
          f"fused convolutions + one activation copy per stage {region * 1e3:.2f} ms: {whole / region:.2f}x "
          f"(a lower bound on the region forward's cost)")
    print(f"3. maps of {args.images} images, the whole fused forward against the region forward (first call of each "
          "way included in neither: the fastest of the repeats):")
    for line in maps(model, args.images, args.map_repeats):
        print(line)
    print(f"4. one step of a chained removal, {args.steps_images} images each one patch from its own base: the whole "
          "fused forward against the region forward's logits (a lower bound on a chained step):")
    for line in chained_step(model, args.steps_images, args.repeats):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
