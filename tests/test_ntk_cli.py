"""``qlandscape ntk`` and ``qlandscape spawn`` (Fort et al. 2020 as pipeline steps): outputs, resume,
the patch QNN, configuration errors."""

import json
import logging

import pytest

from qlandscape.cli import main
from qlandscape.config import NTK_IMPLEMENTATIONS, NTK_KINDS, NTK_METHODS, RunConfig, load_config
from qlandscape.jobs.ntk import FAST_OVERRIDES, checkpoint_indices, fast_overrides

NTK_FILES = ("ntk.json", "ntk_dynamics.npz", "ntk_dynamics.json", "kernel_learning.npz", "kernel_learning.json",
             "ntk_distance.png", "ntk_learning.png", "ntk_trajectory.npz", "ntk_trajectory.json", "ntk_trajectory.png")


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _finite_in_unit_interval(values):
    return all(v is None or 0.0 <= v <= 1.0 + 1e-12 for v in values)


@pytest.fixture(scope="module")
def ntk_run(tmp_path_factory):
    """A run directory trained by ``train`` (with the ntk --fast settings), then ``ntk --fast`` twice."""
    out = tmp_path_factory.mktemp("ntk") / "run"
    assert main(["train", "--out", str(out), "--no-progress"] + _sets(FAST_OVERRIDES["ntk"])) == 0
    stamp = (out / ".stamps" / "train.json").read_bytes()
    return out, stamp


def test_ntk_fast_writes_the_summary_and_figures(ntk_run, capsys, caplog):
    out, train_stamp = ntk_run
    caplog.set_level(logging.INFO, logger="qlandscape")
    assert main(["ntk", "--out", str(out), "--fast", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "kernel distance to initial" in text and "kernel regression test accuracy" in text
    assert str(out / "ntk.json") in text and str(out / "ntk_learning.png") in text
    # the model trained before (by `train`, same settings) is reused: new config sections do not invalidate it
    assert "reusing train" in caplog.text
    assert (out / ".stamps" / "train.json").read_bytes() == train_stamp
    for f in NTK_FILES:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    s = json.loads((out / "ntk.json").read_text())
    for key in ("times_epochs", "kernel_to_initial", "kernel_to_final", "velocity", "kernel_learning",
                "network_accuracy", "implementation", "kind", "wall_time_s", "warnings", "methods", "files"):
        assert key in s, key
    T = len(s["times_epochs"])
    assert T == 5 and s["times_epochs"][0] == 0.0 and s["times_epochs"][-1] == 4.0
    assert s["kernel_to_initial"][0] == 0.0 and s["kernel_to_final"][-1] == 0.0
    assert _finite_in_unit_interval(s["kernel_to_initial"]) and _finite_in_unit_interval(s["kernel_to_final"])
    assert s["kernel_to_initial"][-1] > 0
    assert s["velocity"][0] is None and all(v >= 0 for v in s["velocity"][1:])
    kl = s["kernel_learning"]
    assert kl["methods"] == ["regression", "linearized"] and s["warnings"] == []
    for key in ("regression_accuracy", "linearized_accuracy", "checkpoint_accuracy"):
        assert len(kl[key]) == T and all(v is not None and 0 <= v <= 1 for v in kl[key]), key
    assert 0 <= s["network_accuracy"] <= 1 and all(j >= 0 for j in kl["jitter"])
    # the trajectory picture: the loss in the trajectory's PCA plane, centred at the trained model
    ts = s["trajectory_scan"]
    assert ts is not None and len(ts["explained_variance_ratio"]) == 2 and sum(ts["explained_variance_ratio"]) <= 1
    assert ts["max_loss"] >= ts["center_loss"] > 0
    assert kl["n_train"] == 100 and kl["n_test"] == 60 and s["n_inputs"] == 40
    assert s["kind"] == "trace" and s["implementation"] == "auto"
    assert s["computed_now"] == {"train": False, "ntk_dynamics": True, "kernel_learning": True, "ntk_trajectory": True}
    assert s["wall_time_s"]["ntk_dynamics"] > 0 and s["wall_time_s"]["kernel_learning"] > 0


def test_ntk_rerun_reuses_every_step(ntk_run, capsys, caplog):
    out, _ = ntk_run
    if not (out / "ntk.json").exists():
        assert main(["ntk", "--out", str(out), "--fast", "--no-progress"]) == 0
    before = {f: (out / f).read_bytes() for f in NTK_FILES if f != "ntk.json"}
    caplog.set_level(logging.INFO, logger="qlandscape")
    assert main(["ntk", "--out", str(out), "--fast", "--no-progress"]) == 0
    for step in ("train", "ntk_dynamics", "kernel_learning"):
        assert f"reusing {step}" in caplog.text, step
    assert {f: (out / f).read_bytes() for f in before} == before
    s = json.loads((out / "ntk.json").read_text())
    assert not any(s["computed_now"].values())
    # a changed ntk setting recomputes the kernel steps, not the training
    caplog.clear()
    assert main(["ntk", "--out", str(out), "--fast", "--no-progress", "--set", "ntk.checkpoints_every=2"]) == 0
    assert "reusing train" in caplog.text and "recomputing ntk_dynamics: ntk.checkpoints_every changed" in caplog.text
    assert json.loads((out / "ntk.json").read_text())["times_epochs"] == [0.0, 2.0, 4.0]
    capsys.readouterr()


def test_spawn_fast_writes_barriers_and_resumes(tmp_path, capsys, caplog):
    out = tmp_path / "spawn"
    assert main(["spawn", "--out", str(out), "--fast", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "t=0: loss barrier" in text and str(out / "spawn.png") in text
    s = json.loads((out / "spawn.json").read_text())
    assert s["spawn_times"] == [0, 1, 2] and s["plan"]["epochs"] == 4 and s["plan"]["n_children"] == 2
    assert s["plan"]["copy_optimizer"] is True and s["training_state"].startswith("parameters and optimizer state")
    for key in ("loss_barrier", "error_barrier", "disagreement"):
        assert len(s[key]) == 3 and all(v is not None and v >= 0 for v in s[key]), key
    assert all(v <= 1 for v in s["error_barrier"] + s["disagreement"])
    assert s["children_trained"] == 6 and s["computed_now"] is True
    for f in ("spawn_barriers.npz", "spawn_barriers.json", "spawn.json", "spawn.png"):
        assert (out / f).is_file(), f
    # rerun: the step is reused; with the result gone, the cached parent and children are
    caplog.set_level(logging.INFO, logger="qlandscape")
    assert main(["spawn", "--out", str(out), "--fast", "--no-progress"]) == 0
    assert "reusing spawn_barriers" in caplog.text and "recomputing" not in caplog.text
    (out / "spawn_barriers.npz").unlink()
    assert main(["spawn", "--out", str(out), "--fast", "--no-progress"]) == 0
    s2 = json.loads((out / "spawn.json").read_text())
    assert s2["children_trained"] == 0 and s2["children_cached"] == 6
    assert s2["loss_barrier"] == s["loss_barrier"]


def test_ntk_on_a_tiny_patch_qnn(tmp_path, capsys):
    out = tmp_path / "qnn"
    extra = ["model.kind=patch_qnn", "patch.layers=1", "data.n_samples=40", "train.epochs=1", "ntk.n_inputs=6",
             "ntk.n_train=10", "ntk.n_test=6", "ntk.linearized_epochs=1"]
    assert main(["ntk", "--out", str(out), "--fast", "--no-progress"] + _sets(extra)) == 0
    s = json.loads((out / "ntk.json").read_text())
    assert s["model_info"]["class"] == "PatchQNN" and s["n_inputs"] == 6
    assert s["kernel_to_initial"][0] == 0.0 and _finite_in_unit_interval(s["kernel_to_initial"])
    # the statevector simulator runs under torch.func: both methods (lightning drops "linearized", warning)
    assert s["kernel_learning"]["methods"] == ["regression", "linearized"]
    capsys.readouterr()


@pytest.mark.parametrize("command, override, words", [
    ("ntk", "ntk.kind=diag", ["ntk.kind must be", "'trace'", "'full'", "got 'diag'"]),
    ("ntk", "ntk.n_inputs=1", ["ntk.n_inputs must be", ">= 2", "got 1"]),
    ("ntk", "ntk.methods=[\"exact\"]", ["ntk.methods must be", "'regression'", "'linearized'"]),
    ("spawn", "spawn.times=[99]", ["spawn.times must be", "train.epochs=4", "got [99]"]),
    ("spawn", "train.schedule=cosine", ["train.schedule must be", "'constant'", "spawn"]),
    ("spawn", "spawn.n_children=1", ["spawn.n_children must be", "got 1"]),
])
def test_bad_values_are_configuration_errors_before_any_work(tmp_path, capsys, command, override, words):
    out = tmp_path / "bad"
    assert main([command, "--out", str(out), "--fast", "--no-progress", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qlandscape: configuration error:") and "\n" not in err, err
    assert all(w in err for w in words), err
    assert not out.exists()


def test_spawn_times_after_the_training_stop_only_the_spawn_command():
    cfg = load_config(None, ["train.epochs=3"])  # default spawn.times reach 8: other commands still load
    assert max(cfg.spawn.times) > cfg.train.epochs
    with pytest.raises(ValueError, match=r"spawn\.times must be spawn epochs <= train\.epochs=3"):
        cfg.check_spawn()


def test_user_set_wins_over_fast_settings_and_the_whole_digest_is_unchanged():
    assert fast_overrides("ntk", False) == [] and "train.epochs=4" in fast_overrides("spawn", True)
    cfg = load_config(None, fast_overrides("ntk", True) + ["ntk.n_inputs=12"])
    assert cfg.ntk.n_inputs == 12 and cfg.train.epochs == 4
    # the digest of the whole default config as before [ntk] and [spawn] existed (report.json's config_digest)
    assert RunConfig().digest() == "0f0b99f08efcd5f8"
    assert load_config(None, ["ntk.n_inputs=3"]).digest() != RunConfig().digest()


def test_checkpoint_indices_and_choice_lists():
    from qlandscape.ntk.dynamics import METHODS
    from qlandscape.ntk.kernel import IMPLEMENTATIONS, KINDS
    assert checkpoint_indices(5, 1) == [0, 1, 2, 3, 4]
    assert checkpoint_indices(5, 2) == [0, 2, 4] and checkpoint_indices(6, 2) == [0, 2, 4, 5]
    assert checkpoint_indices(3, 10) == [0, 2]
    assert set(NTK_KINDS) == set(KINDS) and set(NTK_IMPLEMENTATIONS) == set(IMPLEMENTATIONS)
    assert set(NTK_METHODS) == set(METHODS)


def _spawn_cfg(*extra):
    return load_config(None, list(FAST_OVERRIDES["spawn"]) + ["data.n_samples=120", "spawn.times=[0,2]"] + list(extra))


def test_spawn_units_are_run_directory_steps_an_interrupted_run_resumes_bit_identical(tmp_path, monkeypatch):
    """The parent and every child are stamped steps: a run killed after two children keeps them, the rerun
    trains only the rest, and the result equals an uninterrupted run's exactly."""
    import numpy as np

    from qlandscape.jobs import ntk as ntk_job
    reference = ntk_job.run_spawn_job(_spawn_cfg(), tmp_path / "ref", progress=False)
    calls = []
    real = ntk_job.train_child

    def dies_after_two(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(a[-2:])
        return real(*a, **k)

    monkeypatch.setattr(ntk_job, "train_child", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        ntk_job.run_spawn_job(_spawn_cfg(), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "spawn").glob("child_*.npy")) == [
        "child_t0_k0.npy", "child_t0_k1.npy"]
    monkeypatch.setattr(ntk_job, "train_child", real)
    resumed = ntk_job.run_spawn_job(_spawn_cfg(), tmp_path / "run", progress=False)
    assert resumed["children_trained"] == 2 and resumed["children_cached"] == 2
    for key in ("loss_barrier", "error_barrier", "disagreement", "pair_distance", "child_loss", "parent_loss"):
        assert resumed[key] == reference[key], key
    for name in ("child_t0_k0", "child_t2_k1"):
        assert np.array_equal(np.load(tmp_path / "run" / "spawn" / f"{name}.npy"),
                              np.load(tmp_path / "ref" / "spawn" / f"{name}.npy"))


def test_spawn_steps_recompute_exactly_what_a_change_or_a_damaged_file_invalidates(tmp_path, caplog):
    from qlandscape.jobs import ntk as ntk_job
    out = tmp_path / "run"
    first = ntk_job.run_spawn_job(_spawn_cfg(), out, progress=False)
    assert first["children_trained"] == 4
    (out / "spawn" / "child_t2_k0.npy").write_bytes(b"\x93NUMPY damaged")
    caplog.set_level(logging.INFO, logger="qlandscape")
    again = ntk_job.run_spawn_job(_spawn_cfg(), out, progress=False)
    assert again["children_trained"] == 1 and "reusing spawn_parent" in caplog.text
    assert again["loss_barrier"] == first["loss_barrier"]  # the recomputed child is the same child
    caplog.clear()
    changed = ntk_job.run_spawn_job(_spawn_cfg("train.lr=0.02"), out, progress=False)
    assert changed["children_trained"] == 4 and "recomputing spawn_parent: train.lr changed" in caplog.text
    assert changed["loss_barrier"] != first["loss_barrier"]
