"""The machine record that run records and baselines carry, and how compare mode reports a different machine."""

from benchmark.regression.machine import describe_machine, machine_differences


def test_the_machine_record_names_the_arithmetic():
    m = describe_machine()
    assert m["cpu"] and m["cpu_count"] and m["torch"]
    assert m["onednn"] is None or m["onednn"][0].isdigit()


def test_differences_are_listed_field_by_field_and_none_for_the_same_machine():
    m = describe_machine()
    assert machine_differences(m, dict(m)) == []
    other = {**m, "cpu": "Other CPU", "cpu_capability": "AVX2", "torch_threads": 99}
    diffs = machine_differences(other, m)
    assert f"cpu: Other CPU (baseline) vs {m['cpu']} (this run)" in diffs
    assert any(d.startswith("cpu_capability: AVX2") for d in diffs) or m["cpu_capability"] == "AVX2"
    assert not any(d.startswith("torch_threads") for d in diffs)  # a run setting, not the machine
    assert machine_differences(None, m) != [] and machine_differences({}, {}) == []
