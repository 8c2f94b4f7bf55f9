"""Exact no-grad forwards of patch-perturbed copies of the quick CNN's inputs: only the region a patch changed is run.

Occlusion, FeatureAblation and FeaturePermutation forward copies of their inputs that each differ from one input in a
patch. Each copy's activations differ from that input's only near the patch, so each convolution runs on a crop of the
changed region with its halo, and the rest comes from the input's own activations (computed once per call). A
convolution on a crop gives the same bits as on the whole image at those positions (``benchmarks/patch_forward.py``),
so the logits are the fused copy's, bit for bit; a probe per model and input shape checks exactly that against the
forward it replaces, and where it finds any difference (another machine's kernels) the replaced forward runs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.models import fused
from benchmark.models.arch import SmallCNN
from benchmark.models.fused import fuse_module

# The quick CNN's stages: (convolution, BatchNorm) indices in ``features``, each followed by a ReLU, and whether a 2×2
# max-pool follows. The global pooling and the classifier run on the whole last map.
_STAGES = ((0, False), (3, True), (7, True), (11, False))
_LAYOUT = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d,
           nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
# A batch goes the region way only when its first stage's crops are at most this share of the image's side.
MAX_SHARE = 0.5


class _Tail:
    """A SmallCNN's global pooling and classifier as its fused copy runs them: oneDNN's average pooling, then x·Wᵀ + b."""

    def __init__(self, model: SmallCNN):
        self.weight_t = model.fc.weight.detach().t().contiguous()
        self.bias = None if model.fc.bias is None else model.fc.bias.detach()

    def __call__(self, x: Tensor) -> Tensor:
        pooled = torch.ops.aten.adaptive_avg_pool2d(x.contiguous().to_mkldnn(), [1, 1]).to_dense()
        out = torch.matmul(torch.flatten(pooled, 1), self.weight_t)
        return out if self.bias is None else out + self.bias


def _block(conv: nn.Conv2d, norm: nn.Module) -> nn.Module:
    """A stage's convolution + BatchNorm + ReLU without padding: each crop brings its own halo."""
    # A copy, not a new Conv2d: initialising one would draw from the global generator, and a method that draws
    # (FeaturePermutation) would then draw other numbers than without the region way.
    twin = copy.deepcopy(conv)
    twin.padding = (0, 0)
    return nn.Sequential(twin, norm, nn.ReLU()).eval()


def _gather(maps: Tensor, rows: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """(N, height, width, C) crops of the NHWC ``maps`` (B, H, W, C): row n from ``maps[rows[n]]`` at (top, left)."""
    b, h, w, c = maps.shape
    s = maps.stride()
    # Every crop of this size as a view (no copy); indexing it copies the N crops wanted, each a run of whole pixels.
    crops = maps.as_strided((b, h - height + 1, w - width + 1, height, width, c), (s[0], s[1], s[2], s[1], s[2], s[3]))
    return crops[rows, top, left]


def _paste(crops: Tensor, top: Tensor, left: Tensor, window: Tensor, wtop: Tensor, wleft: Tensor) -> Tensor:
    """``crops`` (N, t, u, C) at (top, left) with the NHWC ``window`` at (wtop, wleft) written where they overlap."""
    _, h, w, _ = window.shape
    t, u = crops.shape[1:3]
    dy, dx = wtop - top, wleft - left
    inside = (dy >= 0) & (dy <= t - h) & (dx >= 0) & (dx <= u - w)
    # Windows wholly inside their crops sit at a few offsets: one slice assignment per offset.
    for oy, ox in torch.unique(torch.stack([dy[inside], dx[inside]], 1), dim=0).tolist():
        n = (inside & (dy == oy) & (dx == ox)).nonzero().flatten()
        crops[n, oy : oy + h, ox : ox + w] = window[n]
    # The rest (a window reaching past its crop's edge) pixel by pixel, where they overlap.
    rest = (~inside).nonzero().flatten()
    if len(rest):
        cy = dy[rest, None] + torch.arange(h)
        cx = dx[rest, None] + torch.arange(w)
        ok = ((cy >= 0) & (cy < t))[:, :, None] & ((cx >= 0) & (cx < u))[:, None, :]
        k, i, j = ok.nonzero(as_tuple=True)
        crops[rest[k], cy[k, i], cx[k, j]] = window[rest[k], i, j]
    return crops


def _nchw(nhwc: Tensor) -> Tensor:
    """An NHWC tensor as the channels-last NCHW tensor the fused blocks take."""
    return nhwc.permute(0, 3, 1, 2)


def _nhwc(nchw: Tensor) -> Tensor:
    """A channels-last NCHW tensor as NHWC (a copy only if it is not channels-last)."""
    return nchw.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


def _span(lo: Tensor, hi: Tensor, limit: int) -> tuple[Tensor, int]:
    """Per-row starts of windows of one size (the largest span) covering [lo, hi), inside [0, limit)."""
    size = int((hi - lo).max())
    return torch.minimum(lo, torch.full_like(lo, limit - size)), size


class RegionPlan:
    """A SmallCNN's fused stages on crops, for one input shape: logits of perturbed copies of known inputs."""

    def __init__(self, model: SmallCNN):
        f = model.features
        self.blocks = [fuse_module(_block(f[i], f[i + 1]).to(memory_format=torch.channels_last)) for i, _ in _STAGES]
        self.tail = _Tail(model)

    def base_maps(self, bases: Tensor) -> list[Tensor]:
        """Each stage's input (zero-padded) and, before a pool, its output, NHWC, for the unperturbed ``bases``."""
        maps, x = [], bases
        with torch.no_grad():
            for block, (_, pooled) in zip(self.blocks, _STAGES):
                padded = F.pad(x, (1, 1, 1, 1))
                maps.append(_nhwc(padded))
                x = block(padded.contiguous(memory_format=torch.channels_last))
                if pooled:
                    maps.append(_nhwc(x))
                    x = F.max_pool2d(x, 2)
            maps.append(_nhwc(x))
        return maps

    def logits(self, x: Tensor, rows: Tensor, box: tuple[Tensor, ...], maps: list[Tensor]) -> Tensor:
        """Logits of ``x`` (N, C, H, W): row n differs from base ``rows[n]`` only inside ``box`` (y0, y1, x0, x1)."""
        size = (x.shape[-2], x.shape[-1])
        y0, y1, x0, x1 = box
        own = _nhwc(F.pad(x, (1, 1, 1, 1)))  # the copies' own padded pixels: the first stage's crops come from them
        window = None
        level = 0
        with torch.no_grad():
            for k, (block, (_, pooled)) in enumerate(zip(self.blocks, _STAGES)):
                # The stage's output changes one pixel further out (a 3×3 convolution), clipped to the image.
                y0, y1 = (y0 - 1).clamp(min=0), (y1 + 1).clamp(max=size[0])
                x0, x1 = (x0 - 1).clamp(min=0), (x1 + 1).clamp(max=size[1])
                top, h = _span(y0, y1, size[0])
                left, w = _span(x0, x1, size[1])
                source = own if k == 0 else maps[level]
                crops = _gather(source, rows if k else torch.arange(len(x)), top, left, h + 2, w + 2)
                if window is not None:
                    crops = _paste(crops, top, left, window[0], window[1] + 1, window[2] + 1)
                out = _nhwc(block(_nchw(crops)))
                window, level = (out, top, left), level + 1
                if pooled:
                    y0, y1, x0, x1 = y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2
                    size = (size[0] // 2, size[1] // 2)
                    ptop, ph = _span(y0, y1, size[0])
                    pleft, pw = _span(x0, x1, size[1])
                    crops = _paste(_gather(maps[level], rows, 2 * ptop, 2 * pleft, 2 * ph, 2 * pw),
                                   2 * ptop, 2 * pleft, *window)
                    window, level = (_nhwc(F.max_pool2d(_nchw(crops), 2)), ptop, pleft), level + 1
            last = maps[level][rows]
            full = torch.zeros(len(x), dtype=torch.long)
            last = _paste(last, full, full, *window)
            return self.tail(_nchw(last))


def changed_boxes(x: Tensor, bases: Tensor) -> tuple[Tensor, tuple[Tensor, ...]] | None:
    """(rows, (y0, y1, x0, x1)): row n of ``x`` against input ``n % len(bases)``, the box of pixels that differ (1×1 at
    the corner where none does); None when ``x`` is not whole copies of the inputs."""
    if len(x) % len(bases) or x.shape[1:] != bases.shape[1:]:
        return None
    rows = torch.arange(len(x)) % len(bases)
    differs = (x.reshape(-1, *bases.shape) != bases).any(dim=2).reshape(len(x), *x.shape[2:])
    along_y, along_x = differs.any(dim=2), differs.any(dim=1)
    some = along_y.any(dim=1)
    height, width = along_y.shape[1], along_x.shape[1]

    def bounds(along: Tensor, limit: int) -> tuple[Tensor, Tensor]:
        lo = along.to(torch.uint8).argmax(dim=1)
        hi = limit - along.flip(1).to(torch.uint8).argmax(dim=1)
        return torch.where(some, lo, 0), torch.where(some, hi, 1)

    return rows, (*bounds(along_y, height), *bounds(along_x, width))


class RegionForward(nn.Module):
    """``whole`` (a no-grad forward of a SmallCNN's fused copy) for copies of ``bases`` that each differ in a small
    region: such a batch runs the region way, anything else ``whole`` itself."""

    # The compute timer (benchmark.running.timing.arch_of) counts a call as a pass of the model it stands for, so a
    # floor prices each copy as a whole forward, which the region way undercuts (as LayerFeatureAblation's cut does).
    original_name = SmallCNN.__name__

    def __init__(self, whole, plan: RegionPlan, bases: Tensor):
        super().__init__()
        self.whole, self.plan, self.bases = whole, plan, bases
        self._maps: list[Tensor] | None = None

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        fast = getattr(self.whole, "fast", None)
        if getattr(fast, "entry", None) is not None and fast.entry.forward is not fast:
            return self.whole(x, *args, **kwargs)  # the fused copy fell back to the model: so does this forward
        if torch.is_grad_enabled() or args or kwargs or x.dtype != torch.float32:
            return self.whole(x, *args, **kwargs)
        found = changed_boxes(x, self.bases)
        if found is None:
            return self.whole(x)
        rows, (y0, y1, x0, x1) = found
        if int((y1 - y0).max()) + 2 > MAX_SHARE * x.shape[-2] or int((x1 - x0).max()) + 2 > MAX_SHARE * x.shape[-1]:
            return self.whole(x)
        if self._maps is None:
            self._maps = self.plan.base_maps(self.bases)
        logits = self.plan.logits(x, rows, (y0, y1, x0, x1), self._maps)
        # The fused forward's bits (probed): held for that forward's later calls, such as KernelShap's samples with one
        # patch off, which are FeatureAblation's copies.
        memo = fused.row_memo_for(fast, x)
        if memo is not None:
            memo.hold(x, logits)
        return logits


def _applies(model: nn.Module, example: Tensor) -> bool:
    return (type(model) is SmallCNN and len(model.features) == len(_LAYOUT)
            and all(type(m) is t for m, t in zip(model.features, _LAYOUT, strict=True))
            and example.device.type == "cpu" and example.dtype == torch.float32
            and example.shape[-2] % 4 == 0 and example.shape[-1] % 4 == 0 and not model.training)


def _probe(plan: RegionPlan, forward, example: Tensor) -> bool:
    """Whether the plan's logits equal ``forward``'s bit for bit on patch copies of probe images (every corner, edge
    and the middle; 1-, 4- and 6-pixel patches at 32 px; grey, black and another image's pixels; unchanged copies)."""
    gen = torch.Generator().manual_seed(0)
    bases = torch.rand(3, *example.shape[1:], generator=gen)
    h, w = example.shape[-2:]
    copies = [bases.clone()]
    for side in sorted({1, max(1, 4 * h // 32), max(1, 6 * h // 32)}):
        for top in (0, (h - side) // 2, h - side):
            for left in (0, (w - side) // 2, w - side):
                x = bases.clone()
                x[0, :, top : top + side, left : left + side] = 0.5
                x[1, :, top : top + side, left : left + side] = 0.0
                x[2, :, top : top + side, left : left + side] = bases[0, :, top : top + side, left : left + side]
                copies.append(x)
    x = torch.cat(copies)
    with torch.no_grad():
        return torch.equal(RegionForward(forward, plan, bases)(x), forward(x))


def region_forward(model: nn.Module, forward, inputs: Tensor):
    """``forward`` made exact-region for patch copies of ``inputs`` where ``model`` is a SmallCNN allowed a fused copy
    whose region plan matched ``forward`` bit for bit on the probe; else ``forward`` itself."""
    if not _applies(model, inputs):
        return forward
    # Plans are made from the weights alone: MPRT's randomised copies share them with every copy of the same state.
    shared = fused.shared_for(model)
    if shared is None:  # a model with no fused copy has no region way (its blocks are the fused copy's)
        return forward
    plans = shared.setdefault("region plans", {})
    key = tuple(inputs.shape[1:])
    if key not in plans:
        plan = RegionPlan(model)
        plans[key] = plan if _probe(plan, forward, inputs) else None
    plan = plans[key]
    return forward if plan is None else RegionForward(forward, plan, inputs.detach())
