"""Multi-chunk objectives cache their first-order graphs when they fit a memory budget."""

import pytest
import torch
from torch import nn

import qlandscape as ql
from qlandscape.second_order import saved_graph_bytes


def _data(n=90, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def test_chunks_that_fit_the_budget_get_cached_double_backward_with_the_same_hvp():
    model, data = _model(), _data()
    one = ql.Objective(model, "cross_entropy", data)
    many = ql.Objective(model, "cross_entropy", data, batch_size=32)
    assert many.provider.name == "reverse-over-reverse" and many.cache_graph
    assert "fit the memory budget" in many.provenance()["second_order_reason"]
    V = torch.randn(4, one.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # float64 summation order over chunks only: 1e-12 relative
    torch.testing.assert_close(many.hvp(V), one.hvp(V), rtol=1e-12, atol=1e-14)
    graphs = many.counters.graph_builds
    many.hvp(V)
    assert many.counters.graph_builds == graphs  # reused, not rebuilt


def test_chunks_over_the_budget_use_forward_over_reverse_without_caching():
    model, data = _model(), _data()
    ob = ql.Objective(model, "cross_entropy", data, batch_size=32, memory_budget=0)
    assert ob.provider.name == "forward-over-reverse" and not ob.cache_graph
    assert "exceed the memory budget" in ob.provenance()["second_order_reason"]
    ref = ql.Objective(model, "cross_entropy", data)
    v = torch.randn(ob.n_params, dtype=torch.float64)
    torch.testing.assert_close(ob.hvp(v), ref.hvp(v), rtol=1e-12, atol=1e-14)


def test_the_graph_memory_estimate_is_close_to_the_graphs_actually_saved():
    model, data = _model(), _data(n=200)
    ob = ql.Objective(model, "cross_entropy", data, batch_size=64)
    actual = sum(saved_graph_bytes(ob._chunk_fn(i), ob.theta0) for i in range(len(ob.chunks)))
    # the estimate is a linear extrapolation from 2 and 8 samples padded by 25%: an upper estimate
    # within a factor 2 of the bytes autograd really keeps
    assert actual <= ob.graph_bytes <= 2 * actual


@pytest.mark.parametrize("bad", [-1, "lots", True, float("nan")])
def test_a_bad_memory_budget_is_refused(bad):
    with pytest.raises(ValueError, match="memory_budget"):
        ql.Objective(_model(), "cross_entropy", _data(), batch_size=32, memory_budget=bad)
