import re

import pytest
import torch
from torch import nn

from qlandscape import ParamSpace, select_parameter_names


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_flatten_unflatten_round_trip_is_exact():
    m = model()
    space = ParamSpace.from_module(m)
    vec = space.from_module_values(m)
    assert vec.shape == (3 * 4 + 4 + 4 * 2 + 2,)
    back = space.unflatten(vec)
    for name, p in m.named_parameters():
        assert torch.equal(back[name], p.detach())
    assert torch.equal(space.flatten(back), vec)


def test_unflatten_keeps_leading_batch_dimensions():
    space = ParamSpace.from_module(model())
    batch = torch.randn(5, space.size)
    out = space.unflatten(batch)
    assert out["0.weight"].shape == (5, 4, 3)
    assert torch.equal(out["2.bias"][3], batch[3, -2:])


@pytest.mark.parametrize("selector, expected", [
    ("0.*", ["0.weight", "0.bias"]),
    (re.compile(r".*\.bias"), ["0.bias", "2.bias"]),
    (["2.weight", "0.bias"], ["0.bias", "2.weight"]),  # module order, not list order
    (None, ["0.weight", "0.bias", "2.weight", "2.bias"]),
])
def test_selection_by_glob_regex_and_list(selector, expected):
    assert select_parameter_names(model(), selector) == expected


def test_default_selection_respects_requires_grad_without_changing_it():
    m = model()
    m[0].weight.requires_grad_(False)
    assert select_parameter_names(m) == ["0.bias", "2.weight", "2.bias"]
    assert m[0].weight.requires_grad is False


@pytest.mark.parametrize("selector", ["nope.*", ["0.weight", "missing"], []])
def test_selection_that_matches_nothing_is_a_clear_error(selector):
    with pytest.raises(ValueError, match="match|empty"):
        select_parameter_names(model(), selector)


def test_wrong_vector_length_is_rejected():
    space = ParamSpace.from_module(model())
    with pytest.raises(ValueError, match="length"):
        space.unflatten(torch.zeros(space.size + 1))
