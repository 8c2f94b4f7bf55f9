"""CNN and ViT architectures built so that every Captum and Zennit attribution method accepts them.

Design rules (see the field notes): one ``nn.ReLU`` module per use and never in-place (DeepLift
rejects reused ReLUs; Guided Backprop only hooks ReLU modules), each BatchNorm registered right
after its conv (Zennit merges by registration order), the residual addition routed through a
module so LRP rules can see it, and a bias on the first conv (Quantus ``InputInvariance``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError, did_you_mean

try:  # Captum's LRP assigns a rule to exactly this class; using it keeps Captum LRP correct.
    from captum.attr._utils.custom_modules import Addition_Module as Add
except ImportError:  # pragma: no cover - only if Captum moves its private module

    class Add(nn.Module):
        """Residual addition as a module, so attribution rules can be attached to it."""

        def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
            return x1 + x2


ARCHITECTURES = ("cnn", "resnet", "vit")
VIT_HEADS = 4
VIT_PATCH = 4  # 8 x 8 tokens at 32 px, 16 x 16 at 64 px


class SmallCNN(nn.Module):
    """Plain 4-conv CNN with global average pooling, for 32–64 px inputs."""

    def __init__(self, num_classes: int = 2, width: int = 16, bias_free: bool = False):
        super().__init__()
        w = width
        b = not bias_free
        # bias_free drops BatchNorm too: LRP conservation tests need a network without biases.
        norm = (lambda c: nn.Identity()) if bias_free else nn.BatchNorm2d
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1, bias=b),
            norm(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            norm(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            norm(4 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1, bias=False),
            norm(4 * w),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes, bias=b)
        # Layer whose activations GradCAM-style methods explain (last conv block, before pooling).
        self.cam_layer = "features.13"
        self.inner_layer = "features.9"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    """Pre-activation-free CIFAR ResNet block with its own ReLU modules and a module addition."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = nn.Identity()
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, self.shortcut(x)))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet of depth 6n+2 (He et al. 2016): ResNet-20 (n=3), ResNet-38 (n=6)."""

    def __init__(self, depth: int = 20, num_classes: int = 2, width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 38, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        layers = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.cam_layer = "layer3"
        self.inner_layer = "layer2"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class ToGrid(nn.Module):
    """Patch tokens (B, N, D) laid out as a (B, D, h, w) grid: a reshape, so layer and CAM methods see a spatial layer."""

    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, self.side, self.side)


class AttentionProbe(nn.Module):
    """Identity on the attention probabilities (B, heads, N, N): the module transformer methods hook to read them."""

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return attn


class SelfAttention(nn.Module):
    """Multi-head self-attention; softmax is functional so DeepLift and LRP rules pass through it as gradient."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViT width {dim} is not divisible by its {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probe = AttentionProbe()
        self.proj = nn.Linear(dim, dim)
        # One fused kernel (scaled_dot_product_attention) in place of the written-out softmax: the same function up
        # to float rounding, but the probe never sees the attention. Only training and fused inference copies set it
        # (see fused_attention); every attribution runs the written-out path.
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            out = self.probe(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; residual additions are modules and the MLP uses one ReLU module."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.add1 = Add()
        self.norm2 = nn.LayerNorm(dim)
        # ReLU, not GELU: Guided Backprop, Deconvolution and DeepLift's rescale rule act on ReLU modules only.
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.ReLU(), nn.Linear(mlp_ratio * dim, dim))
        self.add2 = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add1(x, self.attn(self.norm1(x)))
        return self.add2(x, self.mlp(self.norm2(x)))


class SmallViT(nn.Module):
    """Small vision transformer (Dosovitskiy et al. 2021) with a mean-pooled token head, trained from scratch.

    The head averages the patch tokens (Beyer et al. 2022's plain ViT baseline, no class token), so every patch
    token's grid is a spatial layer: ``cam_layer`` is the final normalised tokens, ``inner_layer`` the tokens after
    the middle block, both as ``ToGrid`` reshapes that leave the logits unchanged.
    """

    def __init__(self, image_size: int = 32, patch: int = 4, depth: int = 4, width: int = 64, heads: int = 4,
                 num_classes: int = 2):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"ViT patch {patch} does not tile a {image_size} px image")
        side = image_size // patch
        self.patch, self.side, self.depth = patch, side, depth
        self.embed = nn.Conv2d(3, width, patch, stride=patch, bias=True)
        self.pos = nn.Parameter(torch.zeros(1, side * side, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads) for _ in range(depth))
        self.mid_grid = ToGrid(side)
        self.norm = nn.LayerNorm(width)
        self.grid = ToGrid(side)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.cam_layer = "grid"
        self.inner_layer = "mid_grid"
        self.mid = depth // 2

    def attention_probes(self) -> list[AttentionProbe]:
        """Each block's attention probe, first block first."""
        return [block.attn.probe for block in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 == self.mid:
                x = self.mid_grid(x).flatten(2).transpose(1, 2)
        x = self.grid(self.norm(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def set_fused_attention(model: nn.Module, on: bool) -> list[SelfAttention]:
    """Switch every attention of ``model`` to the fused kernel (``on``) or the probed path; returns those switched."""
    layers = [m for m in model.modules() if isinstance(m, SelfAttention) and m.fused != on]
    for layer in layers:
        layer.fused = on
    return layers


@contextmanager
def fused_attention(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Run ``model``'s attention as one fused kernel inside the block (when ``on``), the probed path after it."""
    switched = set_fused_attention(model, on)
    try:
        yield model
    finally:
        for layer in switched:
            layer.fused = not on


def state_stamp(model: nn.Module) -> tuple:
    """What ``model`` computes, short of its code: its mode, its attention path, and each tensor's place and version."""
    # In-place edits bump a tensor's version and .to() replaces it: either changes the stamp, so a memo of the model's
    # outputs (or a fused copy of it) made before is stale.
    tensors = [*model.parameters(), *model.buffers()]
    return (model.training, tuple(m.fused for m in model.modules() if isinstance(m, SelfAttention)),
            tuple((t.device.type, t.device.index, t.data_ptr(), t._version, t.stride()) for t in tensors))


class PerState:
    """Entries memoised per model (weakly held) for its current :func:`state_stamp`, dropped once the stamp changes."""

    def __init__(self):
        self._tables: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]] = weakref.WeakKeyDictionary()

    def of(self, model: nn.Module) -> dict:
        """``model``'s entries for its current state: a fresh dict once its weights, buffers or mode changed."""
        stamp = state_stamp(model)
        held = self._tables.get(model)
        if held is None or held[0] != stamp:
            held = self._tables[model] = (stamp, {})
        return held[1]


def build_model(arch: str, depth: int = 20, width: int = 16, num_classes: int = 2, image_size: int = 32) -> nn.Module:
    """Construct an untrained model by architecture name ("cnn", "resnet" or "vit")."""
    if arch == "cnn":
        return SmallCNN(num_classes=num_classes, width=width)
    if arch == "resnet":
        return CifarResNet(depth=depth, num_classes=num_classes, width=width)
    if arch == "vit":
        return SmallViT(image_size=image_size, patch=VIT_PATCH, depth=depth, width=width, heads=VIT_HEADS,
                        num_classes=num_classes)
    raise ConfigError(f"Unknown architecture {arch!r}; choose one of {ARCHITECTURES}.{did_you_mean(arch, ARCHITECTURES)}")
