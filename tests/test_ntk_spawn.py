"""Parent-child spawning: barriers and disagreement between SGD-noise children (qlandscape.ntk.spawn)."""

from __future__ import annotations

import concurrent.futures as cf
import itertools

import numpy as np
import pytest
import torch

from qlandscape.data import Dataset, load_digits
from qlandscape.models import MLP
from qlandscape.ntk.spawn import (
    SpawnPlan,
    SpawnResult,
    child_barriers,
    run_job,
    run_spawn,
    spawn_jobs,
    train_child,
    train_parent,
)
from qlandscape.params import ParamSpace

PLAN = dict(n_children=2, epochs=3, lr=0.2, batch_size=16, n_points=11)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_digits(n_samples=150, seed=0)


def _model(width: int = 16) -> MLP:
    torch.manual_seed(0)
    return MLP(64, (width,), 10)


def _brute_errors(model: MLP, data: Dataset, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """0-1 test error at ``lerp(a, b, alpha)``, alpha in linspace(0, 1, n), by loading into a float64 copy."""
    net = MLP(64, (16,), 10).double()
    space = ParamSpace.from_module(net)
    x, y = data.test
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    errs = []
    for alpha in np.linspace(0.0, 1.0, n):
        with torch.no_grad():
            for name, p in zip(space.names, space.unflatten(torch.lerp(ta, tb, float(alpha))).values()):
                dict(net.named_parameters())[name].copy_(p)
            pred = net(x.double()).argmax(dim=-1)
        errs.append(float((pred != y).double().mean()))
    return np.array(errs)


def test_same_seed_children_are_identical_with_zero_barriers(data: Dataset) -> None:
    plan = SpawnPlan(spawn_times=(0, 1), child_seeds=(7, 7), **PLAN)
    res = run_spawn(_model(), data, plan, progress=False)
    for field in ("loss_barrier", "error_barrier", "disagreement"):
        assert np.array_equal(getattr(res, field), np.zeros(2)), field
    assert np.array_equal(res.pair_distance, np.zeros((2, 1)))
    assert np.array_equal(res.child_error[:, 0], res.child_error[:, 1])


def test_spawn_at_the_end_gives_copies_of_the_parent(data: Dataset, tmp_path) -> None:
    plan = SpawnPlan(spawn_times=(3,), **dict(PLAN, n_children=3))
    res = run_spawn(_model(), data, plan, cache_dir=tmp_path, progress=False)
    assert np.array_equal(res.error_barrier, [0.0]) and np.array_equal(res.loss_barrier, [0.0])
    assert np.array_equal(res.disagreement, [0.0]) and res.pair_loss_barrier.shape == (1, 3)
    assert np.array_equal(res.child_error, np.full((1, 3), res.parent_error[0]))
    parent = train_parent(_model(), data, plan)
    child = np.load(tmp_path / "child_t3_k2.npy")
    assert np.array_equal(child, parent.trajectory[3])


def test_error_barrier_matches_brute_force(data: Dataset, tmp_path) -> None:
    plan = SpawnPlan(spawn_times=(0, 1), **dict(PLAN, n_children=3, n_points=9))
    model = _model()
    res = run_spawn(model, data, plan, cache_dir=tmp_path, progress=False)
    assert res.pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert np.array_equal(res.alpha, np.linspace(0, 1, 9))
    x, y = data.test
    nonzero = 0
    for s, t in enumerate(plan.spawn_times):
        kids = [np.load(tmp_path / f"child_t{t}_k{k}.npy") for k in range(3)]
        for p, (i, j) in enumerate(itertools.combinations(range(3), 2)):
            errs = _brute_errors(model, data, kids[i], kids[j], 9)
            np.testing.assert_allclose(res.error_curves[s, p], errs, atol=1e-12, rtol=0)
            expected = errs.max() - (errs[0] + errs[-1]) / 2
            assert abs(res.pair_error_barrier[s, p] - expected) <= 1e-12
            nonzero += expected > 0
            assert abs(res.child_error[s, i] - errs[0]) <= 1e-12 and abs(res.child_error[s, j] - errs[-1]) <= 1e-12
            net_i, net_j = (_predict(kids[k], x) for k in (i, j))
            assert res.pair_disagreement[s, p] == pytest.approx(float((net_i != net_j).double().mean()), abs=1e-12)
        assert res.error_barrier[s] == pytest.approx(res.pair_error_barrier[s].mean(), abs=1e-15)
        lc = res.loss_curves[s]
        np.testing.assert_allclose(res.pair_loss_barrier[s], lc.max(axis=1) - (lc[:, 0] + lc[:, -1]) / 2, atol=1e-15)
    assert nonzero > 0  # the check is not vacuous: some pair has a positive barrier
    assert np.all(res.pair_error_barrier >= 0) and np.all((res.error_curves >= 0) & (res.error_curves <= 1))


def _predict(theta: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    net = MLP(64, (16,), 10).double()
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(theta), net.parameters())
        return net(x.double()).argmax(dim=-1)


def test_children_differ_only_in_data_order(data: Dataset) -> None:
    plan = SpawnPlan(spawn_times=(1,), **PLAN)
    model = _model()
    parent = train_parent(model, data, plan)
    assert parent.trajectory.shape[0] == 2  # records at epochs 0 and 1
    a = train_child(model, data, plan, parent, 1, 0)
    # the spawn point directly (parameters and optimizer state): the same child
    a2 = train_child(model, data, plan, (parent.trajectory[1], parent.optimizer_state_at(1)), 1, 0)
    with pytest.raises(ValueError, match="optimizer state at t=1"):  # parameters alone would restart momentum
        train_child(model, data, plan, parent.trajectory[1], 1, 0)
    b = train_child(model, data, plan, parent, 1, 1)
    assert np.array_equal(a, a2)
    assert not np.array_equal(a, b) and np.linalg.norm(a - b) > 1e-3
    assert plan.seeds == (1, 2) and SpawnPlan(spawn_times=(1,), parent_seed=3).seeds == (3001, 3002)
    same = SpawnPlan(spawn_times=(1,), child_seeds=(1, 1), **PLAN)  # child 1 takes child 0's seed
    assert np.array_equal(train_child(model, data, same, parent, 1, 1), a)


def test_children_continue_the_parents_training_state(data: Dataset) -> None:
    """Full-batch training (the minibatch order cannot matter): a child spawned at t = 1 and trained to the end
    equals the parent trained for all epochs in one go, to rounding (the permuted batch is summed in another
    order), because it starts from the parent's momentum buffers; with copy_optimizer=False its momentum
    restarts and it ends elsewhere."""
    n = int(data.train[0].shape[0])
    full_batch = dict(PLAN, batch_size=n)
    plan = SpawnPlan(spawn_times=(1,), **full_batch)
    model = _model()
    child = train_child(model, data, plan, train_parent(model, data, plan), 1, 0)
    straight = train_parent(model, data, SpawnPlan(spawn_times=(3,), **full_batch)).trajectory[-1]
    np.testing.assert_allclose(child, straight, rtol=0, atol=1e-5)  # float32 model: rounding of 3 epochs
    fresh = SpawnPlan(spawn_times=(1,), copy_optimizer=False, **full_batch)
    restarted = train_child(model, data, fresh, train_parent(model, data, fresh), 1, 0)
    assert np.abs(restarted - straight).max() > 100 * np.abs(child - straight).max()
    # parameters alone are accepted without the optimizer state
    assert np.array_equal(train_child(model, data, fresh, straight, 1, 0),
                          train_child(model, data, fresh, (straight, None), 1, 0))


def test_jobs_executor_and_resume_agree(data: Dataset, tmp_path) -> None:
    plan = SpawnPlan(spawn_times=(2, 0), **PLAN)
    assert plan.spawn_times == (0, 2)
    model = _model()
    serial = run_spawn(model, data, plan, progress=False)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        pooled = run_spawn(model, data, plan, executor=pool, cache_dir=tmp_path, progress=False)
    resumed = run_spawn(model, data, plan, cache_dir=tmp_path, progress=False)
    assert pooled.info["children_trained"] == 4 and resumed.info["children_cached"] == 4
    assert resumed.info["children_trained"] == 0
    for name in ("pair_loss_barrier", "pair_error_barrier", "pair_disagreement", "loss_curves", "child_error",
                 "parent_error", "parent_loss"):
        assert np.array_equal(getattr(serial, name), getattr(pooled, name)), name
        assert np.array_equal(getattr(serial, name), getattr(resumed, name)), name
    # the job list run by hand gives the same numbers
    jobs = spawn_jobs(plan)
    assert [j["kind"] for j in jobs] == ["parent"] + ["child"] * 4 + ["barrier"] * 2
    outputs: dict = {}
    for job in jobs:
        outputs[job["id"]] = run_job(job, model, data, plan, {n: outputs[n] for n in job["needs"]})
    assert np.array_equal(outputs["barrier_t2"]["error_barrier"], serial.pair_error_barrier[1])
    with pytest.raises(ValueError, match="another spawn plan"):
        run_spawn(model, data, SpawnPlan(spawn_times=(1,), **PLAN), cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="needs the outputs"):
        run_job(jobs[1], model, data, plan, {})


def test_result_and_plan_round_trip(data: Dataset, tmp_path) -> None:
    plan = SpawnPlan(spawn_times=(0, 3), child_seeds=(5, 9), **PLAN)
    assert SpawnPlan.from_dict(plan.to_dict()) == plan
    assert SpawnPlan.from_dict(SpawnPlan(spawn_times=(1,)).to_dict()) == SpawnPlan(spawn_times=(1,))
    import json
    assert SpawnPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    res = run_spawn(_model(), data, plan, progress=False)
    back = SpawnResult.load(res.save(tmp_path / "spawn"))
    for f in ("spawn_times", "error_barrier", "loss_curves", "pairs", "child_seeds", "parent_error"):
        assert np.array_equal(getattr(back, f), getattr(res, f)), f
    assert back.plan == plan.to_dict() and SpawnPlan.from_dict(back.plan) == plan
    assert back.info["n_params"] == res.info["n_params"]


@pytest.mark.parametrize("kwargs, field", [
    (dict(spawn_times=(1,), n_children=1), "n_children"),
    (dict(spawn_times=(4,), epochs=3), "spawn_times"),
    (dict(spawn_times=(-1,), epochs=3), "spawn_times"),
    (dict(spawn_times=(), epochs=3), "spawn_times"),
    (dict(spawn_times=(1, 1), epochs=3), "spawn_times"),
    (dict(spawn_times=(1.5,), epochs=3), "spawn_times"),
    (dict(spawn_times=(1,), epochs=0), "epochs"),
    (dict(spawn_times=(1,), lr=0.0), "lr"),
    (dict(spawn_times=(1,), optimizer="rmsprop"), "optimizer"),
    (dict(spawn_times=(1,), batch_size=0), "batch_size"),
    (dict(spawn_times=(1,), n_points=1), "n_points"),
    (dict(spawn_times=(1,), eval_split="val"), "eval_split"),
    (dict(spawn_times=(1,), child_seeds=(1, 2, 3)), "child_seeds"),
    (dict(spawn_times=(1,), parent_seed=-2), "parent_seed"),
])
def test_bad_plans_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SpawnPlan(**kwargs)


def test_bad_data_and_models(data: Dataset) -> None:
    plan = SpawnPlan(spawn_times=(1,), **PLAN)
    empty = Dataset(data.x_train, data.y_train, data.x_test[:0], data.y_test[:0], data.image_shape, data.classes)
    with pytest.raises(ValueError, match="data.test must be non-empty"):
        run_spawn(_model(), empty, plan, progress=False)
    with pytest.raises(TypeError, match="Dataset"):
        run_spawn(_model(), data.train, plan, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown SpawnPlan field"):
        SpawnPlan.from_dict(dict(plan.to_dict(), epoch=3))
    parent = train_parent(_model(), data, plan)
    with pytest.raises(ValueError, match="different model"):
        train_child(_model(width=8), data, plan, parent, 1, 0)
    with pytest.raises(ValueError, match="different model"):
        train_child(_model(width=8), data, plan, parent.trajectory[1], 1, 0)
    with pytest.raises(ValueError, match="spawn_times"):
        train_child(_model(), data, plan, parent, 2, 0)
    with pytest.raises(ValueError, match="n_children"):
        train_child(_model(), data, plan, parent, 1, 2)
    good = parent.trajectory[1]
    with pytest.raises(ValueError, match="child 1 .*different model"):
        child_barriers(_model(), data, plan, [good, good[:-1]])
    with pytest.raises(ValueError, match="at least 2 children"):
        child_barriers(_model(), data, plan, [good])


def test_batchnorm_models_are_refused():
    """Children start from parameter-only checkpoints, so BatchNorm running statistics would be the input
    model's, not the parent's at the spawn time: refused, naming the way out."""
    import pytest

    from qlandscape.data import load_digits
    from qlandscape.models import MLP
    from qlandscape.ntk import SpawnPlan, run_spawn
    ds = load_digits(n_samples=60, downsample=4)
    with pytest.raises(ValueError, match="running statistics"):
        run_spawn(MLP(16, (8,), 10, "tanh", batchnorm=True), ds, SpawnPlan(spawn_times=(0,), epochs=1),
                  progress=False)
