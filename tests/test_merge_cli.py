"""``qlandscape merge``: two models from different seeds, barriers before and after permutation alignment."""

import json
import logging

import numpy as np
import pytest
import torch

from qlandscape import jobs
from qlandscape.cli import main
from qlandscape.config import load_config
from qlandscape.jobs.merge import FAST_OVERRIDES, fast_overrides, seed_config, summary_lines
from qlandscape.merging import MergeResult
from qlandscape.objective import Objective

MLP = ["--set", "model.kind=mlp"]


@pytest.fixture(scope="module")
def merge_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("merge") / "run"
    assert main(["merge", "--out", str(out), "--fast", "--no-progress"] + MLP) == 0
    return out, json.loads((out / "merge.json").read_text())


def test_fast_overrides():
    assert fast_overrides(False) == [] and fast_overrides(True) == list(FAST_OVERRIDES)
    load_config(None, fast_overrides(True))  # valid


def test_summary_and_files(merge_run):
    out, s = merge_run
    for key in ("model_kind", "n_params", "split", "seeds", "t", "endpoints", "plain", "aligned", "align",
                "symmetry_note", "computed_now", "files", "training"):
        assert key in s, key
    assert s["model_kind"] == "mlp" and s["seeds"] == [0, 1] and s["split"] == "test" and s["symmetry_note"] is None
    assert s["align"] == ["weight", "activation"] and s["computed_now"] is True
    assert len(s["t"]) == 11 and s["t"][0] == 0.0 and s["t"][-1] == 1.0
    for key in ("loss_barrier", "error_barrier", "merged_accuracy", "loss", "error"):
        assert s["plain"][key] is not None, key
    for method in ("weight", "activation"):
        r = s["aligned"][method]
        for key in ("loss_barrier", "error_barrier", "merged_accuracy", "iterations", "similarity_before",
                    "similarity_after", "identity", "all_identity"):
            assert key in r, (method, key)
        assert r["similarity_after"] >= r["similarity_before"] - 1e-9
        assert r["all_identity"] is False
    assert s["aligned"]["weight"]["loss_barrier"] <= s["plain"]["loss_barrier"] + 1e-9
    for name in ("merge.json", "merge.png", "merge_weight.npz", "merge_activation.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "model.pt").is_file()
    text = "\n".join(summary_lines(s))
    assert "plain" in text and "weight" in text and "activation" in text


def test_endpoints_are_the_trained_models(merge_run, caplog):
    out, s = merge_run
    caplog.set_level(logging.INFO, logger="qlandscape")
    base = load_config(None, fast_overrides(True) + ["model.kind=mlp"])
    for label, seed in (("a", 0), ("b", 1)):
        model, _, ds = jobs.ensure_trained(seed_config(base, seed), out / f"seed{seed}", progress=False)
        loss, acc = Objective(model, "cross_entropy", ds.test, dtype=torch.float64).evaluate()
        assert s["endpoints"][label]["loss"] == pytest.approx(loss, rel=1e-9, abs=1e-12)
        assert s["endpoints"][label]["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert "reusing train" in caplog.text and "trained MLP" not in caplog.text
    a, b = model.state_dict(), torch.load(out / "seed0" / "model.pt", weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the two seeds give different models


def test_curves_equal_the_stored_results(merge_run):
    out, s = merge_run
    for method in ("weight", "activation"):
        res = MergeResult.load(out / f"merge_{method}")
        np.testing.assert_array_equal(np.asarray(s["t"]), res.t)
        np.testing.assert_array_equal(np.asarray(s["plain"]["loss"]), res.loss_plain)
        np.testing.assert_array_equal(np.asarray(s["plain"]["error"]), res.error_plain)
        np.testing.assert_array_equal(np.asarray(s["aligned"][method]["loss"]), res.loss_aligned)
        np.testing.assert_array_equal(np.asarray(s["aligned"][method]["error"]), res.error_aligned)
        assert s["aligned"][method]["loss_barrier"] == res.barrier_aligned


def test_rerun_computes_nothing(merge_run):
    out, s = merge_run
    stamps = sorted(p.name for p in (out / ".stamps").iterdir()) if (out / ".stamps").is_dir() else None
    assert main(["merge", "--out", str(out), "--fast", "--no-progress"] + MLP) == 0
    again = json.loads((out / "merge.json").read_text())
    assert again["computed_now"] is False and not any(again["computed_steps"].values())
    assert again["plain"] == s["plain"] and again["aligned"] == s["aligned"]
    if stamps is not None:
        assert sorted(p.name for p in (out / ".stamps").iterdir()) == stamps


def test_patch_mlp_plain_only_with_note(tmp_path):
    out = tmp_path / "pm"
    args = ["merge", "--out", str(out), "--fast", "--no-progress", "--set", "model.kind=patch_mlp",
            "--set", "data.n_samples=120", "--set", "train.epochs=2", "--set", "merge.n_points=5"]
    assert main(args) == 0
    s = json.loads((out / "merge.json").read_text())
    assert s["model_kind"] == "patch_mlp" and s["aligned"] == {} and s["align"] == []
    assert "not implemented" in s["symmetry_note"]
    assert s["plain"]["loss_barrier"] is not None and len(s["plain"]["loss"]) == 5
    assert s["endpoints"]["a"]["loss"] != s["endpoints"]["b"]["loss"]  # model.seed initializes the patch MLPs
    assert (out / "merge_plain.npz").is_file() and (out / "merge.png").is_file()
    assert not (out / "merge_weight.npz").exists()


def test_bad_seeds_is_a_config_error(tmp_path):
    out = tmp_path / "bad"
    assert main(["merge", "--out", str(out), "--fast", "--no-progress", "--set", "merge.seeds=[1,1]"]) == 2
    assert not out.exists()


def test_batchnorm_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "bn"
    assert main(["merge", "--out", str(out), "--fast", "--no-progress", "--set", "model.batchnorm=true"]) == 1
    assert "running statistics" in capsys.readouterr().err
    assert not (out / "seed0").exists()
