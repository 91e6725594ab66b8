"""Task mixing: probabilities of each strategy, stateless deterministic sampling."""

from collections import Counter

import pytest

from multimodel.data.mixture import TaskSampler, mixing_probabilities

SIZES = {"big": 9000, "mid": 900, "small": 100}


def test_proportional_uniform_temperature_weights():
    p = mixing_probabilities(SIZES, "proportional")
    assert p["big"] == pytest.approx(0.9) and p["small"] == pytest.approx(0.01)
    u = mixing_probabilities(SIZES, "uniform")
    assert all(v == pytest.approx(1 / 3) for v in u.values())
    t = mixing_probabilities(SIZES, "temperature", temperature=2.0)
    # p ∝ sqrt(n): 94.87, 30, 10
    assert t["big"] == pytest.approx(94.868 / 134.868, rel=1e-3)
    assert p["small"] < t["small"] < u["small"]
    assert mixing_probabilities(SIZES, "temperature", temperature=1.0) == pytest.approx(p)
    w = mixing_probabilities(SIZES, "weights", weights={"big": 1, "small": 3})
    assert w == pytest.approx({"big": 0.25, "mid": 0.0, "small": 0.75})


@pytest.mark.parametrize("kwargs, match", [
    ({"strategy": "random"}, "unknown train.mixing"),
    ({"strategy": "weights", "weights": {"nope": 1.0}}, "nope"),
    ({"strategy": "weights", "weights": {}}, "zero probability"),
    ({"strategy": "temperature", "temperature": 0.0}, "temperature"),
])
def test_bad_mixing_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixing_probabilities(SIZES, **kwargs)


def test_sampler_is_a_pure_function_of_step_and_matches_probabilities():
    probs = mixing_probabilities(SIZES, "temperature", temperature=2.0)
    a, b = TaskSampler(probs, seed=7), TaskSampler(probs, seed=7)
    draws = [a.task_at(s) for s in range(20000)]
    assert draws[:500] == [b.task_at(s) for s in range(500)]
    assert [a.task_at(s) for s in range(100, 200)] == draws[100:200]  # no hidden state
    counts = Counter(draws)
    for name, p in probs.items():
        assert counts[name] / len(draws) == pytest.approx(p, abs=0.015)
    other = TaskSampler(probs, seed=8)
    assert [other.task_at(s) for s in range(200)] != draws[:200]
