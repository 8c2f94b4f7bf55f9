"""The chunk size of no-grad forwards (benchmark.methods._chunked): measured on the calls themselves, only among exact ones."""

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


def _rows(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(n))


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _chunked.ChunkedForward(model)(x)


def _whole_pass_costs(ticks: float):
    """A call's cost: one tick, but ``ticks`` for a pass over all 256 rows (slower per image than four of 64)."""
    return lambda n: ticks if n == 256 else 1.0


def test_the_fastest_exact_way_is_chosen_and_the_answer_is_the_whole_pass(clock):
    model = _Rows(clock, cost=_whole_pass_costs(10.0))
    x = _rows(256)
    out = _forward(model, x)
    assert torch.equal(out, model(x))
    assert _chunked._chosen[next(iter(_chunked._chosen))] == (128, 256)  # two calls of 128: the fewest, bar the whole
    calls = model.calls
    _forward(model, x)
    assert model.calls == calls + 2  # measured once: now in chunks of 128


def test_a_whole_pass_that_is_fastest_is_kept_whole(clock):
    model = _Rows(clock)  # every call costs the same: one pass over all rows is the cheapest per image
    _forward(model, _rows(256))
    calls = model.calls
    _forward(model, _rows(256))
    assert model.calls == calls + 1


def test_a_chunk_whose_outputs_differ_in_a_bit_is_never_chosen(clock):
    # Per image, 128 rows a call is the fastest (a whole pass of 256 costs ten calls' time), but its bits differ.
    model = _Rows(clock, extra=lambda n: 1e-3 * (n == 128), cost=_whole_pass_costs(10.0))
    assert _chunked.CANDIDATES == (32, 64, 128, 256)
    _forward(model, _rows(256))
    assert next(iter(_chunked._chosen.values())) == (64, 256)


def test_no_chunking_where_no_candidate_is_exact(clock):
    gen = torch.Generator().manual_seed(0)
    model = _Rows(clock, extra=lambda n: torch.rand(n, 1, generator=gen), cost=_whole_pass_costs(10.0))
    _forward(model, _rows(256))  # no two passes give the same bits: the whole pass, though slower per image
    assert next(iter(_chunked._chosen.values())) == (256, 256)


def test_calls_no_larger_than_the_smallest_candidate_are_never_measured(clock):
    model = _Rows(clock)
    for _ in range(3):
        _forward(model, _rows(_chunked.CANDIDATES[0]))
    assert model.calls == 3 and not _chunked._chosen


def test_the_measurement_is_made_once_per_architecture_and_input_shape_and_again_for_larger_calls(clock):
    model = _Rows(clock, cost=_whole_pass_costs(10.0))
    _forward(model, _rows(256))
    calls = model.calls
    _forward(_Rows(clock), _rows(256))  # another model of the same architecture: measured already
    _forward(model, _rows(100))  # a smaller call: chunked as measured
    assert model.calls == calls + 1
    _forward(model, torch.rand(256, 3, 16, 16))  # another input shape: measured again
    assert model.calls > calls + 2
    small = _Rows(clock, cost=lambda n: 10.0 if n == 100 else 1.0)
    small.weight = nn.Parameter(torch.ones(3, 3, 1, 1))  # another architecture
    _forward(small, _rows(100))
    assert next(iter(v for k, v in _chunked._chosen.items() if (3, 3, 1, 1) in k[1])) == (64, 100)
    calls = small.calls
    _forward(small, _rows(256))  # larger, with a candidate (128) the 100-row call could not measure: measured again
    assert small.calls > calls + 4
    assert next(iter(v for k, v in _chunked._chosen.items() if (3, 3, 1, 1) in k[1]))[1] == 256


def test_a_whole_pass_larger_than_every_candidate_that_won_is_not_measured_again_on_larger_calls(clock):
    model = _Rows(clock)  # every call costs the same: a whole pass wins at any size, as on a GPU
    _forward(model, _rows(300))
    assert next(iter(_chunked._chosen.values())) == (300, 300)  # every candidate compared, and beaten
    calls = model.calls
    for n in (600, 1200):
        x = _rows(n)
        assert torch.equal(_forward(model, x), model(x))
    assert model.calls == calls + 4  # each larger call one whole pass (and the reference pass above): none measured
    assert next(iter(_chunked._chosen.values())) == (300, 300)


def test_a_whole_pass_that_won_below_the_largest_candidate_is_measured_again_on_a_larger_call(clock):
    model = _Rows(clock)
    _forward(model, _rows(100))  # 128 and 256 were never compared with it
    calls = model.calls
    _forward(model, _rows(300))
    assert model.calls > calls + 1 and next(iter(_chunked._chosen.values())) == (300, 300)
