"""The row memo (benchmark.models.row_memo): a repeated row is answered with the bits a forward would give it, only for
forwards probed to compute each row apart from its batch mates, and only through a fused copy in use without gradients."""

from __future__ import annotations

import pytest
import torch

from benchmark.methods import _chunked
from benchmark.methods._chunked import no_grad_forward
from benchmark.models import fused as fusion
from benchmark.models import row_memo
from benchmark.models.arch import build_model
from benchmark.models.row_memo import RowMemo, layout_of, row_digests, rows_independent


@pytest.fixture(autouse=True)
def fixed_chunk(monkeypatch):
    """Chunks of 16 instead of the measured fastest: the choice times forward passes, and tests time nothing."""
    monkeypatch.setattr(_chunked, "_chosen", {})
    monkeypatch.setattr(_chunked, "_measure", lambda model, x: (16, model(x)))


class Counted:
    """A forward that counts the rows it is given."""

    def __init__(self, forward):
        self.forward, self.rows, self.calls = forward, 0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        self.calls += 1
        return self.forward(x)


def _rows(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _linear(t: torch.Tensor) -> torch.Tensor:
    """A forward that computes each row apart, elementwise (a matrix product may not: BLAS picks its kernel by size)."""
    return t[:, 0, 0, :5] * 3.0 - t[:, 2, 7, 3:8]


@torch.no_grad()
def test_a_row_met_before_is_answered_with_its_bits_and_only_new_rows_are_forwarded():
    model = _linear
    first, other = _rows(12, 0), _rows(12, 1)
    # Rows of the first batch in another order and position, new rows, and one new row three times.
    second = torch.cat([first[[5, 0, 11]], other[:4], other[[7, 7, 7]], first[[2]]])
    memo, forward = RowMemo(), Counted(model)
    assert torch.equal(memo(forward, first), model(first))
    got = memo(forward, second)
    assert torch.equal(got, model(second))
    assert forward.rows == 12 + 5  # the 4 new rows and the repeated one once
    assert (memo.forwarded, memo.answered) == (17, 6)
    assert torch.equal(memo(forward, second), got) and forward.calls == 2  # all held: no forward at all


@torch.no_grad()
def test_held_outputs_are_answered_once_and_a_repeated_row_is_held_once():
    x = _rows(6, 5)
    x[4] = x[1]
    memo, forward = RowMemo(), Counted(_linear)
    memo.hold(x, _linear(x))
    assert len(memo._index) == 5
    assert torch.equal(memo(forward, x[[4, 0, 1]]), _linear(x[[4, 0, 1]])) and forward.rows == 0


@torch.no_grad()
def test_a_row_twice_in_a_first_batch_is_forwarded_once():
    x = _rows(5, 7)[[0, 1, 0, 2, 1, 3]]
    memo, forward = RowMemo(), Counted(_linear)
    assert torch.equal(memo(forward, x), _linear(x)) and forward.rows == 4


@torch.no_grad()
def test_a_full_memo_starts_over_and_still_answers_exactly():
    model = _linear
    x = _rows(10, 2)
    memo, forward = RowMemo(capacity=3), Counted(model)
    memo(forward, x)
    assert torch.equal(memo(forward, x), model(x))
    assert forward.rows == 10 + 7  # three rows held, the other seven forwarded again


def test_rows_independent_tells_a_per_row_forward_from_one_that_reads_its_batch_mates():
    model = _linear
    x = _rows(9, 3)
    with torch.no_grad():
        independent, whole = rows_independent(model, x)
        assert independent and torch.equal(whole, model(x))
        assert not rows_independent(lambda t: model(t) - model(t).mean(0), x)[0]  # batch-centred: mates matter
        assert not rows_independent(lambda t: model(t).sum(1), x)[0]  # not one output row per input row


def test_a_row_digest_is_its_content_in_either_memory_layout():
    x = _rows(4, 4)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert layout_of(x) == layout_of(cl) and layout_of(x) != layout_of(x.double())
    assert row_digests(x) == row_digests(x.clone()) == row_digests(cl)
    y = x.clone()
    y[2, 1, 3, 3] += 1e-7
    assert [a == b for a, b in zip(row_digests(x), row_digests(y))] == [True, True, False, True]


def test_a_forward_whose_output_moves_with_the_memory_layout_is_not_row_independent():
    x = _rows(9, 6)

    def by_layout(t: torch.Tensor) -> torch.Tensor:
        return _linear(t) + float(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous())

    assert not rows_independent(by_layout, x)[0]
    assert not rows_independent(by_layout, x.contiguous(memory_format=torch.channels_last))[0]


def _fused_forward(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("cnn", width=8).eval()
    fusion.allow(model)
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    forward = no_grad_forward(model, x)
    assert isinstance(forward.fast, fusion.FusedForward)
    forward.fast.graph = Counted(forward.fast.graph)
    return model, forward, x


def test_a_fused_copys_no_grad_rows_are_answered_once_probed_and_gradients_never():
    model, forward, x = _fused_forward()
    graph = forward.fast.graph
    with torch.no_grad():
        first = forward(x)  # the probe's rows, the whole batch among them, held
        held = graph.rows
        assert held > len(x)
        assert torch.equal(forward(x), first) and graph.rows == held
        assert torch.equal(forward(x[[3, 1, 4]]), first[[3, 1, 4]]) and graph.rows == held
        y = torch.cat([x[:2], torch.rand(3, 3, 32, 32)])
        assert torch.equal(forward(y)[:2], first[:2]) and graph.rows == held + 3
    with torch.enable_grad():
        grads_on = forward(x[:5])
    assert graph.rows == held + 3  # with gradients the model itself runs, not the graph nor the memo
    assert torch.allclose(grads_on, first[:5], atol=1e-5)


def test_a_family_whose_rows_read_their_batch_mates_gets_no_memo(monkeypatch):
    monkeypatch.setattr(row_memo, "rows_independent", lambda forward, x: (False, forward(x)))
    _, forward, x = _fused_forward(seed=1)
    graph = forward.fast.graph
    with torch.no_grad():
        for _ in range(3):
            forward(x)
    assert graph.rows == 4 * len(x)  # the probe's batch, then each call's rows, none held


def test_a_refused_fused_copy_answers_nothing_from_its_memo():
    model, forward, x = _fused_forward(seed=2)
    with torch.no_grad():
        forward(x)
        forward(x)
        with pytest.warns(fusion.FusedFallback):
            fusion._refuse(forward.fast.entry, "a test refuses it")
        assert fusion.row_memo_for(forward.fast, x) is None
        assert torch.allclose(forward(x), model(x), atol=1e-5)  # the plain model answers every row


def test_a_graph_that_fails_while_probed_is_refused_and_the_model_answers():
    model, forward, x = _fused_forward(seed=3)

    def broken(t):
        raise RuntimeError("a kernel the graph lacks")

    forward.fast.graph = broken
    with torch.no_grad(), pytest.warns(fusion.FusedFallback, match="the fused graph failed"):
        out = forward(x)
    assert torch.allclose(out, model(x), atol=1e-5)
    assert fusion.row_memo_for(forward.fast, x) is None
