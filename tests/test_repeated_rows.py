"""benchmarks/repeated_rows.py counts a row as repeated only when the same weights computed it before, unhooked."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "repeated_rows.py"  # loaded by the ``script`` fixture


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()


def _counts(ledger, where=("p", "m")) -> list[int]:
    """[rows compared, repeated, not compared, new rows through other weights] summed over the ledger's keys at
    ``where``."""
    out = [0, 0, 0, 0]
    for key, counts in ledger.rows.items():
        if key[:2] == where:
            out = [a + b for a, b in zip(out, counts, strict=True)]
    return out


def test_a_row_repeats_only_under_the_same_weights_and_only_unhooked(script):
    model, other = _net(0), _net(1)
    x = torch.rand(4, 3, 8, 8)
    with script.RowLedger((3, 8, 8)) as ledger, torch.no_grad():
        ledger.graded = {script.weights_key(model)}
        ledger.where = ("p", "m")
        model(x)
        model(torch.cat([x[:2], torch.rand(2, 3, 8, 8)]))  # two rows met before, two new
        assert _counts(ledger) == [8, 2, 0, 0]
        other(x)  # the same rows through other weights: new, and counted as another model's
        assert _counts(ledger) == [12, 2, 0, 4]
        twin = copy.deepcopy(model).to(memory_format=torch.channels_last)  # the same values in another layout
        twin(x)
        assert _counts(ledger) == [16, 6, 0, 4]
        handle = model[1].register_forward_hook(lambda m, a, out: out * 2)  # a method's hook: another computation
        model(x)
        handle.remove()
        assert _counts(ledger) == [16, 6, 4, 4]
        model[0](torch.rand(2, 3, 4, 4))  # not a batch of the images counted (an inner part's input): left out
        assert _counts(ledger) == [16, 6, 4, 4]


def test_a_fused_graph_counts_as_the_model_it_was_fused_from(script):
    from benchmark.models import fused

    model = _net(0)
    x = torch.rand(4, 3, 8, 8)
    before = fused.fuse_module(model)  # fused before the ledger began: its weights are unknown to it
    original = fused.fuse_module
    with script.RowLedger((3, 8, 8)) as ledger, torch.no_grad():
        ledger.where = ("p", "m")
        graph = fused.fuse_module(model)
        model(x)
        graph(x)
        assert _counts(ledger)[:3] == [8, 4, 0]
        before(x)  # never compared (it would match any other graph of unknown weights)
        assert _counts(ledger)[:3] == [8, 4, 4]
    assert fused.fuse_module is original and ledger.graph_keys.get(graph) == script.weights_key(model)  # restored


def test_the_ledger_counts_the_outermost_forward_only_and_apart_by_gradients(script):
    model = _net(0)
    x = torch.rand(3, 3, 8, 8)
    with script.RowLedger((3, 8, 8)) as ledger:
        ledger.where = ("p", "m")
        with torch.no_grad():
            model(x)
        model(x.clone().requires_grad_(True)).sum().backward()
    assert {key[3]: counts[:2] for key, counts in ledger.rows.items()} == {False: [3, 0], True: [3, 3]}
