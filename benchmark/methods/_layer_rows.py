"""Captum's layer passes for a layer method whose rows repeat and do not depend on their batch mates: the layer outputs
of repeated rows computed once per distinct row, and the layer gradients in passes of at most a given number of rows.

Captum's LayerGradientShap runs NoiseTunnel's ``n_samples`` copies of every image and the baseline drawn for each of
them through the model again, only to read their layer outputs: 16 images at 8 samples are two no-grad passes of 128
rows, of which 16 and at most 4 are distinct. Each shortcut is checked bit for bit against Captum's own pass the first
time a shape of call is met in a process (both computed then), and Captum's pass runs wherever that check failed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from captum._utils import gradient as captum_gradient
from torch import Tensor, nn

from benchmark.methods._captum import target_rows
from benchmark.methods._chunked import arch_key
from benchmark.methods._variants import replaced, same_tensors

# Rows are told apart by their bits (an integer view), so -0.0 and 0.0, or two NaNs, are never taken for one row.
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16, torch.bfloat16: torch.int16}
# Per (shortcut, architecture and input shape, training mode (batch statistics tie rows together), layer, rows of the
# call, distinct or pass rows, options): whether the shortcut gave Captum's bits on the first such call.
_exact: dict[tuple, bool] = {}


def _flat(out) -> list[Tensor]:
    return [t for part in out for t in _flat(part)] if isinstance(out, (tuple, list)) else [out]


def _same(a, b) -> bool:
    """Whether two of Captum's (nested) outputs hold the same tensors: shape, layout, dtype and bits."""
    fa, fb = tuple(_flat(a)), tuple(_flat(b))
    return all(isinstance(x, Tensor) for x in (*fa, *fb)) and same_tensors(fa, fb)


def checked(key: tuple, shortcut: Callable, exact: Callable):
    """``shortcut()`` where it gave ``exact()``'s bits on the first call of ``key`` (both computed then; one that raised
    there is never taken), else ``exact()``."""
    verdict = _exact.get(key)
    if verdict is False:
        return exact()
    if verdict is None:
        try:
            out = shortcut()
        except Exception:  # a call the shortcut cannot take is Captum's to answer (or to raise on)
            _exact[key] = False
            return exact()
        reference = exact()
        _exact[key] = _same(out, reference)
        return reference
    return shortcut()


def _layer_name(model: nn.Module, layer: nn.Module) -> str | None:
    return next((name for name, module in model.named_modules() if module is layer), None)


def distinct_rows_layer_eval(forward_fn, inputs, layer, additional_forward_args=None, device_ids=None,
                             attribute_to_layer_input=False, grad_enabled=False):
    """Captum's ``_forward_layer_eval``, with each distinct row of a single input tensor forwarded once (in a pass of
    at least two rows) and its layer outputs given to every copy."""
    exact = functools.partial(captum_gradient._forward_layer_eval, forward_fn, inputs, layer, additional_forward_args,
                              device_ids, attribute_to_layer_input, grad_enabled)
    x = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else inputs
    name = _layer_name(forward_fn, layer) if isinstance(forward_fn, nn.Module) else None
    if (name is None or not isinstance(x, Tensor) or x.dtype not in _BITS or x.dim() < 2 or len(x) < 4
            or additional_forward_args is not None or device_ids or grad_enabled):
        return exact()
    distinct, inverse = torch.unique(x.flatten(1).view(_BITS[x.dtype]), dim=0, return_inverse=True)
    k, n = len(distinct), len(x)
    if 2 * k > n:
        return exact()
    first = torch.full((k,), n, dtype=torch.long, device=x.device).scatter_reduce(
        0, inverse, torch.arange(n, device=x.device), reduce="amin")
    # A pass of one row runs other kernels here (other bits): a single distinct row is forwarded twice.
    picks = first.repeat(2) if k == 1 else first

    def shortcut():
        out = captum_gradient._forward_layer_eval(forward_fn, x[picks], layer, None, None, attribute_to_layer_input,
                                                  grad_enabled)
        return tuple(t[inverse] for t in out)

    key = ("eval", arch_key(forward_fn, x), forward_fn.training, name, n, k, attribute_to_layer_input)
    return checked(key, shortcut, exact)


def layer_gradients_in_groups(rows: int, forward_fn, layer, inputs, target_ind=None, additional_forward_args=None,
                              **options):
    """Captum's ``compute_layer_gradients_and_eval`` of one layer in passes of at most ``rows`` rows."""
    exact = functools.partial(captum_gradient.compute_layer_gradients_and_eval, forward_fn, layer, inputs, target_ind,
                              additional_forward_args, **options)
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    n = len(xs[0])
    name = _layer_name(forward_fn, layer) if isinstance(forward_fn, nn.Module) else None
    plain = all(options.get(k) is None for k in options if k != "attribute_to_layer_input")
    if name is None or n <= rows or additional_forward_args is not None or not plain:
        return exact()
    # As in gradients_in_groups: no pass of one row (other kernels, other bits).
    starts = [s for s in range(0, n, max(rows, 2)) if n - s != 1]

    def shortcut():
        parts = [captum_gradient.compute_layer_gradients_and_eval(
            forward_fn, layer, tuple(x[s:e] for x in xs), target_rows(target_ind, n, s, e), **options)
            for s, e in zip(starts, [*starts[1:], n], strict=True)]
        return tuple(tuple(torch.cat(ts) for ts in zip(*kind, strict=True)) for kind in zip(*parts, strict=True))

    key = ("grads", arch_key(forward_fn, xs[0]), forward_fn.training, name, n, rows,
           options.get("attribute_to_layer_input", False))
    return checked(key, shortcut, exact)


@contextlib.contextmanager
def shortcuts(module, rows: int) -> Iterator[None]:
    """Inside the block, the Captum ``module``'s layer evaluations and layer gradients take the shortcuts above."""
    with replaced(module, "_forward_layer_eval", distinct_rows_layer_eval), \
            replaced(module, "compute_layer_gradients_and_eval", functools.partial(layer_gradients_in_groups, rows)):
        yield
