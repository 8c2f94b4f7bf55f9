"""The weight-bounded least-recently-used table the in-process memos share."""

from benchmark.lru import Lru


def test_the_least_recently_used_go_first_once_the_weight_passes_the_budget():
    lru = Lru(budget=10, weigh=len)
    lru.put("a", "xxxx")
    lru.put("b", "xxxx")
    assert lru.get("a") == "xxxx"  # "a" is now the most recently used, so "b" goes first
    lru.put("c", "xxxx")
    assert "b" not in lru and "a" in lru and "c" in lru and lru.weight == 8


def test_pop_and_replace_keep_the_weight_in_step():
    lru = Lru(budget=100, weigh=len)
    lru.put("a", "xx")
    lru.put("a", "xxxxx")  # replaced, not added twice
    assert len(lru) == 1 and lru.weight == 5
    assert lru.pop("a") == "xxxxx" and lru.weight == 0 and lru.pop("a", "gone") == "gone"
    lru.put("b", "x")
    lru.clear()
    assert len(lru) == 0 and lru.weight == 0 and lru.get("b") is None


def test_the_newest_entry_stays_even_when_heavier_than_the_budget():
    lru = Lru(budget=3, weigh=len)
    lru.put("a", "xx")
    lru.put("big", "xxxxxx")
    assert list(lru._entries) == ["big"] and lru.weight == 6


def test_entries_count_one_each_by_default():
    lru = Lru(budget=2)
    for key in "abc":
        lru.put(key, None)
    assert list(lru._entries) == ["b", "c"]
