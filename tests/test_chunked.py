"""The chunk size of no-grad forwards (benchmark.methods._chunked): measured once, chosen only among exact ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.methods import _chunked


class _Rows(nn.Module):
    """Each row's sum, plus what ``extra`` adds for a batch of that many rows; a call costs ``cost(rows)`` ticks of the
    measuring clock (default one)."""

    def __init__(self, clock: list[float], extra=lambda n: 0.0, cost=lambda n: 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 3, 1, 1))  # a 4-d weight: the arch key reads its memory format
        self.clock, self.extra, self.cost, self.calls = clock, extra, cost, 0

    def forward(self, x):
        self.calls += 1
        self.clock[0] += self.cost(len(x))
        return x.flatten(1).sum(1, keepdim=True) + self.extra(len(x))


@pytest.fixture
def clock(monkeypatch):
    """A clock only the model's calls move (no timed assertion): fewer calls a pass is faster per image."""
    now = [0.0]
    monkeypatch.setattr(_chunked, "_chosen", {})
    monkeypatch.setattr(_chunked, "_clock", lambda: now[0])
    return now


def _example():
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_the_fastest_exact_chunk_is_chosen(clock):
    assert _chunked.fastest_chunk(_Rows(clock), _example()) == max(_chunked.CANDIDATES)


def test_a_chunk_whose_outputs_differ_in_a_bit_is_never_chosen(clock):
    # Per image, 128 rows a call is the fastest (a whole pass of 256 costs ten calls' time), but its bits differ.
    model = _Rows(clock, extra=lambda n: 1e-3 * (n == 128), cost=lambda n: 10.0 if n == _chunked.PROBE else 1.0)
    assert _chunked.CANDIDATES == (32, 64, 128, 256) and _chunked.PROBE == 256
    assert _chunked.fastest_chunk(model, _example()) == 64


def test_no_chunking_where_no_candidate_is_exact(clock):
    gen = torch.Generator().manual_seed(0)
    model = _Rows(clock, extra=lambda n: torch.rand(n, 1, generator=gen))  # no two passes give the same bits
    assert _chunked.fastest_chunk(model, _example()) is None


def test_the_measurement_is_made_once_per_architecture_and_input_shape(clock):
    model = _Rows(clock)
    _chunked.fastest_chunk(model, _example())
    calls = model.calls
    assert calls > 0
    _chunked.fastest_chunk(_Rows(clock), _example())  # another model of the same architecture: measured already
    _chunked.fastest_chunk(model, _example())
    assert model.calls == calls
    _chunked.fastest_chunk(model, torch.rand(2, 3, 16, 16))  # another input shape: measured again
    assert model.calls > calls
