"""Learning-rate schedule (constant / never-reset cosine annealing) and the choice of "the minimum"
(the last weights or the recorded checkpoint with the lowest full training loss) of :func:`train`."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import numpy as np
import pytest
import torch
from torch import nn

from qlandscape import MLP, TrainResult, train
from qlandscape.config import RunConfig, TrainConfig, load_config
from qlandscape.params import ParamSpace


def _data(n: int = 40, d: int = 5, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def _mlp(batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return MLP(5, (6,), 3, batchnorm=batchnorm).double()


def _flat(model: nn.Module) -> np.ndarray:
    return ParamSpace.from_module(model).from_module_values(model).to(torch.float64).numpy()


# An SGD run whose training loss falls, then rises again (lr too large): the lowest loss is at record 5 of 8.
OSCILLATING = dict(epochs=8, lr=1.0, optimizer="sgd", momentum=0.9, batch_size=10, progress=False)


# ------------------------------------------------------------------ schedule
def test_cosine_schedule_records_the_closed_form_rate_and_cycles_past_t_max():
    x, y = _data()
    lr, t_max, epochs = 0.1, 2, 7
    _, r = train(_mlp(), (x, y), epochs=epochs, lr=lr, optimizer="adam", batch_size=20, progress=False,
                 schedule="cosine", t_max=t_max)
    # epoch k (0-based) trains with lr * (1 + cos(pi k / T)) / 2; torch updates the rate recursively, so it
    # agrees with the closed form to rounding (~1e-17 per step), far inside 1e-12
    expected = [lr * (1 + math.cos(math.pi * k / t_max)) / 2 for k in range(epochs)]
    assert np.isnan(r.lr[0]) and r.lr.shape == (epochs + 1,)
    np.testing.assert_allclose(r.lr[1:], expected, rtol=0, atol=1e-12)
    assert abs(r.lr[1 + t_max]) < 1e-12 and abs(r.lr[1 + 2 * t_max] - lr) < 1e-12  # 0 at T, back to lr at 2T
    assert r.config["schedule"] == "cosine" and r.config["t_max"] == t_max


def test_cosine_t_max_defaults_to_the_number_of_epochs():
    x, y = _data()
    _, r = train(_mlp(), (x, y), epochs=4, lr=0.2, batch_size=20, progress=False, schedule="cosine")
    np.testing.assert_allclose(r.lr[1:], [0.2 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)],
                               rtol=0, atol=1e-12)


def test_constant_schedule_records_a_constant_rate():
    x, y = _data()
    _, r = train(_mlp(), (x, y), epochs=3, lr=0.05, batch_size=20, progress=False)
    assert np.isnan(r.lr[0]) and np.array_equal(r.lr[1:], [0.05, 0.05, 0.05])


def test_record_every_stores_the_rate_of_the_last_epoch_before_each_record():
    x, y = _data()
    _, r = train(_mlp(), (x, y), epochs=5, lr=0.1, batch_size=20, progress=False, schedule="cosine", t_max=5,
                 record_every=2)
    assert list(r.steps) == [0, 4, 8, 10]
    np.testing.assert_allclose(r.lr[1:], [0.1 * (1 + math.cos(math.pi * k / 5)) / 2 for k in (1, 3, 4)],
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_defaults_are_the_constant_schedule_and_the_last_weights_bit_for_bit(optimizer):
    x, y = _data()
    kw = dict(epochs=3, lr=0.1, optimizer=optimizer, batch_size=16, progress=False)
    m0, r0 = train(_mlp(), (x, y), **kw)
    m1, r1 = train(_mlp(), (x, y), schedule="constant", select="last", **kw)
    for a, b in zip((r0.trajectory, r0.train_loss, r0.test_loss, r0.lr), (r1.trajectory, r1.train_loss,
                                                                          r1.test_loss, r1.lr)):
        assert np.array_equal(a, b, equal_nan=True)
    assert np.array_equal(_flat(m0), _flat(m1)) and r0.selected == r1.selected == len(r0.steps) - 1


def test_the_default_loop_matches_a_plain_torch_sgd_loop():
    # what train() did before the schedule existed: shuffle with the seeded generator, SGD steps, no scheduler
    x, y = _data()
    _, r = train(_mlp(), (x, y), epochs=3, lr=0.1, momentum=0.9, batch_size=16, seed=3, progress=False)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        perm = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0], 16):
            idx = perm[s:s + 16]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    assert np.array_equal(r.trajectory[-1], _flat(model))


# ------------------------------------------------------------------ the minimum
def test_lowest_train_loss_returns_the_recorded_checkpoint_with_the_lowest_loss():
    x, y = _data()
    model, r = train(_mlp(), (x, y), select="lowest_train_loss", **OSCILLATING)
    best = int(np.argmin(r.train_loss[1:])) + 1
    assert r.selected == best and best != len(r.steps) - 1  # the oscillating run's minimum is not its end
    assert np.array_equal(_flat(model), r.trajectory[best])
    assert not model.training and r.config["select"] == "lowest_train_loss"


def test_last_returns_the_final_weights():
    x, y = _data()
    model, r = train(_mlp(), (x, y), **OSCILLATING)
    assert r.selected == len(r.steps) - 1
    assert np.array_equal(_flat(model), r.trajectory[-1])


def test_only_recorded_checkpoints_are_candidates():
    x, y = _data()
    model, r = train(_mlp(), (x, y), select="lowest_train_loss", record_every=3, **OSCILLATING)
    assert list(r.steps) == [0, 12, 24, 32]  # epochs 3, 6 and the last (8); 4 steps per epoch
    assert r.selected == int(np.argmin(r.train_loss[1:])) + 1
    assert np.array_equal(_flat(model), r.trajectory[r.selected])


def test_the_initialization_is_never_the_minimum():
    x, y = _data()
    _, r = train(_mlp(), (x, y), epochs=2, lr=3.0, momentum=0.9, batch_size=10, progress=False,
                 select="lowest_train_loss")
    assert r.train_loss[0] < r.train_loss[1:].min() and r.selected >= 1


class _FlatLoss(nn.Module):
    """A linear model plus a parameter that moves (weight decay shrinks it) without changing the loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(5, 3).double()
        self.free = nn.Parameter(torch.ones(2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).detach() + 0.0 * self.free.sum()  # zero gradient (not None), so decay applies


def test_ties_pick_the_earliest_checkpoint():
    x, y = _data()
    model, r = train(_FlatLoss(), (x, y), epochs=3, lr=0.1, momentum=0.0, weight_decay=0.5, batch_size=40,
                     progress=False, select="lowest_train_loss")
    assert np.all(r.train_loss == r.train_loss[0])
    assert len({tuple(row) for row in r.trajectory}) == 4  # the weights do move
    assert r.selected == 1 and np.array_equal(_flat(model), r.trajectory[1])


def test_batchnorm_buffers_come_from_the_selected_checkpoint():
    x, y = _data()
    model, r = train(_mlp(batchnorm=True), (x, y), select="lowest_train_loss", **OSCILLATING)
    assert 1 <= r.selected < len(r.steps) - 1
    # the same run stopped at the chosen epoch (record_every=1: record k is epoch k)
    stopped, _ = train(_mlp(batchnorm=True), (x, y), **{**OSCILLATING, "epochs": r.selected})
    got, want = model.state_dict(), stopped.state_dict()
    assert list(got) == list(want) and any("running_mean" in k for k in got)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # and a deep copy: the returned buffers differ from the final ones
    last, _ = train(_mlp(batchnorm=True), (x, y), **OSCILLATING)
    key = next(k for k in got if "running_mean" in k)
    assert not torch.equal(got[key], last.state_dict()[key])


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="linear"), "schedule.*constant.*cosine"),
    (dict(select="best"), "select.*last.*lowest_train_loss"),
    (dict(schedule="cosine", t_max=0), "t_max"),
    (dict(t_max=1.5), "t_max"),
])
def test_bad_schedule_options_raise_before_training(kwargs, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        train(_mlp(), (x, y), epochs=1, progress=False, **kwargs)


def test_config_choices_agree_with_train():
    hints = typing.get_type_hints(train)
    for value in typing.get_args(hints["schedule"]):
        assert TrainConfig(schedule=value).schedule == value
    for value in typing.get_args(hints["select"]):
        assert TrainConfig(minimum=value).minimum == value


@pytest.mark.parametrize("override, key", [
    ("train.schedule=linear", "train.schedule"),
    ("train.t_max=0", "train.t_max"),
    ("train.t_max=2.5", "train.t_max"),
    ("train.minimum=best", "train.minimum"),
])
def test_bad_train_schedule_settings_name_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_schedule_settings_parse_from_overrides():
    cfg = load_config(None, ["train.schedule=cosine", "train.t_max=5", "train.minimum=lowest_train_loss"])
    assert (cfg.train.schedule, cfg.train.t_max, cfg.train.minimum) == ("cosine", 5, "lowest_train_loss")
    assert load_config(None, ["train.t_max=none"]).train.t_max is None
    assert RunConfig().train == TrainConfig() and TrainConfig().t_max is None


def test_default_schedule_settings_leave_the_digest_unchanged():
    cfg = RunConfig()
    assert cfg.digest("data", "model", "train") == "0cea0f646ecc9160"  # the digest before the keys existed
    others = [load_config(None, [o]).digest("train") for o in
              ("train.schedule=cosine", "train.t_max=5", "train.minimum=lowest_train_loss")]
    assert len({cfg.digest("train"), *others}) == 4


# ------------------------------------------------------------------ results and the pipeline
def test_train_results_saved_before_lr_and_selected_still_load(tmp_path):
    x, y = _data()
    _, r = train(_mlp(), (x, y), epochs=2, lr=0.1, batch_size=20, progress=False)
    base = r.save(tmp_path / "train")
    meta = json.loads(base.with_suffix(".json").read_text())
    del meta["selected"]
    base.with_suffix(".json").write_text(json.dumps(meta))
    with np.load(base.with_suffix(".npz")) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "lr"}
    np.savez(base.with_suffix(".npz"), **arrays)
    old = TrainResult.load(base)
    assert old.selected == -1 and old.lr.shape == (0,)
    assert np.array_equal(old.trajectory, r.trajectory)
    new = TrainResult.load(r.save(tmp_path / "again"))
    assert new.selected == r.selected and np.array_equal(new.lr, r.lr, equal_nan=True)


def test_pipeline_keeps_the_configured_minimum_and_reloads_it(tmp_path):
    from qlandscape.jobs import ensure_trained
    # lr = 10 overshoots: the loss falls for four epochs and rises in the fifth
    cfg = load_config(None, ["data.n_samples=60", "model.hidden=[8]", "train.epochs=5", "train.lr=10",
                             "train.minimum=lowest_train_loss"])
    model, tr, _ = ensure_trained(cfg, tmp_path, progress=False)
    assert tr.selected == int(np.argmin(tr.train_loss[1:])) + 1 and tr.selected != len(tr.steps) - 1
    assert np.array_equal(_flat(model), tr.trajectory[tr.selected].astype(np.float64))
    again, tr2, _ = ensure_trained(cfg, tmp_path, progress=False)
    assert tr2.selected == tr.selected
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_pipeline_trains_with_the_configured_schedule(tmp_path):
    from qlandscape.jobs import ensure_trained
    cfg = load_config(None, ["data.n_samples=60", "model.hidden=[8]", "train.epochs=3", "train.lr=0.5",
                             "train.schedule=cosine", "train.t_max=2"])
    _, tr, _ = ensure_trained(cfg, tmp_path, progress=False)
    np.testing.assert_allclose(tr.lr[1:], [0.5, 0.25, 0.0], rtol=0, atol=1e-12)
    assert tr.selected == len(tr.steps) - 1  # minimum = "last" by default


def test_schedule_settings_survive_the_config_dict():
    cfg = dataclasses.replace(RunConfig(), train=TrainConfig(schedule="cosine", t_max=5, minimum="lowest_train_loss"))
    d = cfg.to_dict()["train"]
    assert (d["schedule"], d["t_max"], d["minimum"]) == ("cosine", 5, "lowest_train_loss")


# ------------------------------------------------------------------ checkpoints inside epochs (record_steps)
def test_record_steps_records_every_k_optimizer_steps_and_the_end():
    x, y = _data()  # 40 samples, batches of 10: 4 steps per epoch
    _, res = train(_mlp(), (x, y), epochs=3, lr=0.1, batch_size=10, record_steps=3, progress=False)
    np.testing.assert_array_equal(res.steps, [0, 3, 6, 9, 12])
    np.testing.assert_allclose(res.epochs_at_records(), [0, 0.75, 1.5, 2.25, 3.0], rtol=0, atol=1e-15)
    _, res5 = train(_mlp(), (x, y), epochs=3, lr=0.1, batch_size=10, record_steps=5, progress=False)
    np.testing.assert_array_equal(res5.steps, [0, 5, 10, 12])  # the end is always recorded, once
    assert res5.config["record_steps"] == 5


def test_records_inside_epochs_are_the_weights_after_that_many_steps():
    """Records at steps that end an epoch equal the per-epoch run's records (same seed, same batches), and a
    mid-epoch record equals a run stopped there (plain torch SGD on the same batches)."""
    x, y = _data()
    _, per_epoch = train(_mlp(), (x, y), epochs=2, lr=0.1, batch_size=10, progress=False)
    _, per_2 = train(_mlp(), (x, y), epochs=2, lr=0.1, batch_size=10, record_steps=2, progress=False)
    np.testing.assert_array_equal(per_2.steps, [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(per_2.trajectory[[0, 2, 4]], per_epoch.trajectory)
    np.testing.assert_array_equal(per_2.train_loss[[0, 2, 4]], per_epoch.train_loss)
    # step 2 by hand: the first two batches of epoch 1's permutation
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    for s in (0, 10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[perm[s:s + 10]]), y[perm[s:s + 10]]).backward()
        opt.step()
    np.testing.assert_allclose(per_2.trajectory[1], _flat(model), rtol=0, atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [
    (dict(record_steps=-1), "record_steps"),
    (dict(record_steps=1.5), "record_steps"),
    (dict(record_steps=True), "record_steps"),
    (dict(record_steps=2, record_every=2), "record_steps.*record_every"),
])
def test_bad_record_steps_raise_before_training(kwargs, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        train(_mlp(), (x, y), epochs=1, progress=False, **kwargs)


def test_record_steps_in_the_configuration():
    cfg = load_config(None, ["train.record_steps=4"])
    assert cfg.train.record_steps == 4 and cfg.train.n_checkpoints() is None
    assert RunConfig().train.record_steps == 0
    assert cfg.digest("train") != RunConfig().digest("train")
    for override in ("train.record_steps=-1", "train.record_steps=0.5"):
        with pytest.raises(ValueError, match=r"train\.record_steps"):
            load_config(None, [override])
    with pytest.raises(ValueError, match=r"train\.record_steps.*record_every"):
        load_config(None, ["train.record_steps=3", "train.record_every=2"])


# ------------------------------------------------------------------ optimizer state (continuing a run)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_continuing_with_the_kept_optimizer_state_equals_the_uninterrupted_run(optimizer):
    """Full-batch training (the batch order cannot matter): 4 epochs in one go equal 2 epochs, then 2 more from
    the kept optimizer state, to rounding (1e-12: the loss sums the permuted batch in another order); without
    the state (momentum / Adam moments restarting) the result is far off."""
    x, y = _data()
    kw = dict(lr=0.05, optimizer=optimizer, batch_size=40, progress=False)
    full, res = train(_mlp(), (x, y), epochs=4, keep_optimizer_state=[2, 4], **kw)
    half, res2 = train(_mlp(), (x, y), epochs=2, keep_optimizer_state=[2], **kw)
    state = res2.optimizer_state_at(2)
    assert set(state) == ({"momentum_buffer"} if optimizer == "sgd" else {"step", "exp_avg", "exp_avg_sq"})
    for key, value in res.optimizer_state_at(2).items():
        np.testing.assert_allclose(state[key], value, rtol=0, atol=1e-13)
    cont, _ = train(half, (x, y), epochs=2, optimizer_state=state, seed=7, **kw)
    restart, _ = train(half, (x, y), epochs=2, seed=7, **kw)
    np.testing.assert_allclose(_flat(cont), _flat(full), rtol=0, atol=1e-12)
    assert np.abs(_flat(restart) - _flat(full)).max() > 1e-4


def test_flat_optimizer_state_round_trips_the_torch_state():
    from qlandscape.train import _load_flat_optimizer_state, flat_optimizer_state
    x, y = _data()
    for kind, make in (("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
                       ("adam", lambda ps: torch.optim.Adam(ps, lr=0.01))):
        model = _mlp()
        opt = make(model.parameters())
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        flat = flat_optimizer_state(opt, model)
        fresh = make(model.parameters())
        _load_flat_optimizer_state(fresh, kind, model, ParamSpace.from_module(model), flat)
        for p in model.parameters():
            assert set(fresh.state[p]) == set(opt.state[p])
            for k, v in opt.state[p].items():
                assert torch.equal(fresh.state[p][k], v), (kind, k)


def test_bad_optimizer_states_are_refused_before_training():
    x, y = _data()
    _, res = train(_mlp(), (x, y), epochs=1, optimizer="adam", lr=0.01, keep_optimizer_state=[1], progress=False)
    adam_state = res.optimizer_state_at(1)
    with pytest.raises(ValueError, match="exp_avg.*optimizer='sgd'"):
        train(_mlp(), (x, y), epochs=1, optimizer_state=adam_state, progress=False)
    with pytest.raises(ValueError, match="shape"):
        train(_mlp(), (x, y), epochs=1, optimizer_state={"momentum_buffer": np.zeros(3)}, progress=False)
    with pytest.raises(ValueError, match="lacks"):
        train(_mlp(), (x, y), epochs=1, optimizer="adam", optimizer_state={"step": adam_state["step"]},
              progress=False)
    for keep in ([0], [2], [True], [1.5]):
        with pytest.raises(ValueError, match="keep_optimizer_state"):
            train(_mlp(), (x, y), epochs=1, keep_optimizer_state=keep, progress=False)
    with pytest.raises(ValueError, match=r"no optimizer state kept at epoch 2 \(kept: \[1\]\)"):
        res.optimizer_state_at(2)
    assert res.optimizer_state_at(0) == {}


def test_kept_optimizer_states_survive_save_and_load(tmp_path):
    x, y = _data()
    _, res = train(_mlp(), (x, y), epochs=3, keep_optimizer_state=[1, 3], progress=False)
    res.save(tmp_path / "tr")
    back = TrainResult.load(tmp_path / "tr")
    np.testing.assert_array_equal(back.optimizer_state_epochs, [1, 3])
    for e in (1, 3):
        np.testing.assert_array_equal(back.optimizer_state_at(e)["momentum_buffer"],
                                      res.optimizer_state_at(e)["momentum_buffer"])
    _, plain = train(_mlp(), (x, y), epochs=1, progress=False)
    assert plain.optimizer_states.shape == (0, 0, 0) and plain.optimizer_state_keys == []
