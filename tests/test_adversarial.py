"""Adversarial attacks, robust accuracy and epsilon-sharpness: specifications against references
(closed forms on linear models and quadratics, torchattacks where installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qlandscape.adversarial import (
    Attack,
    SharpnessResult,
    epsilon_sharpness,
    robust_accuracy,
    robust_evaluate,
    sharpness_groups,
    valid_range,
)
from qlandscape.data import load_digits
from qlandscape.landscape import normalize_direction
from qlandscape.models.classical import MLP
from qlandscape.objective import Objective


def _init(module_fn, seed: int) -> nn.Module:
    """Build a module with seeded init without moving the global generator."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return module_fn().to(torch.float64)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = load_digits(n_samples=400, seed=0)
    return ds.x_train.double(), ds.y_train, ds.x_test.double(), ds.y_test


@pytest.fixture(scope="module")
def trained_mlp(digits) -> nn.Module:
    x, y, _, _ = digits
    model = _init(lambda: MLP(64, hidden=(16,), out_features=10), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


# ---------------------------------------------------------------------------------------------- attacks
def test_fgsm_linf_on_logistic_regression_is_the_closed_form(digits):
    x, y = digits[0][:40], digits[1][:40]
    model = _init(lambda: nn.Linear(64, 10), seed=1)
    W, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax(x @ W.T + b, dim=1)
    grad_x = (p - F.one_hot(y, 10).double()) @ W  # d CE_i / d x_i = W^T (softmax - onehot)
    eps = 0.2
    expected = x + eps * grad_x.sign()
    got = Attack("fgsm", "linf", epsilon=eps).perturb(model, x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    lo, hi = valid_range(x)
    got = Attack("fgsm", "linf", epsilon=eps, clamp=(lo, hi)).perturb(model, x, y)
    torch.testing.assert_close(got, expected.clamp(lo, hi), rtol=0, atol=1e-12)
    assert float(got.min()) >= lo and float(got.max()) <= hi
    assert bool((got != expected).any())  # the clamp was active somewhere


def test_fgsm_l2_on_logistic_regression_is_the_normalized_gradient(digits):
    x, y = digits[0][:10], digits[1][:10]
    model = _init(lambda: nn.Linear(64, 10), seed=2)
    W, b = model.weight.detach(), model.bias.detach()
    grad_x = (torch.softmax(x @ W.T + b, dim=1) - F.one_hot(y, 10).double()) @ W
    expected = x + 0.5 * grad_x / grad_x.norm(dim=1, keepdim=True)
    got = Attack("fgsm", "l2", epsilon=0.5).perturb(model, x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 2.0)])
def test_pgd_stays_in_ball_and_range_and_beats_fgsm(digits, trained_mlp, norm, eps):
    x_tr, _, x, y = digits
    lo, hi = valid_range(x_tr, x)
    pgd = Attack("pgd", norm, epsilon=eps, steps=10, clamp=(lo, hi), seed=3)
    x_adv = pgd.perturb(trained_mlp, x, y)
    delta = (x_adv - x).reshape(x.shape[0], -1)
    per_sample = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert float(per_sample.max()) <= eps * (1 + 1e-12)
    assert float(per_sample.max()) > 0.5 * eps  # it does move
    assert float(x_adv.min()) >= lo and float(x_adv.max()) <= hi
    clean, adv = _ce(trained_mlp, x, y), _ce(trained_mlp, x_adv, y)
    fgsm = _ce(trained_mlp, Attack("fgsm", norm, epsilon=eps, clamp=(lo, hi)).perturb(trained_mlp, x, y), y)
    assert float(adv.mean()) > float(clean.mean()) + 0.1
    assert float(adv.mean()) >= float(fgsm.mean())


def test_entries_outside_the_clamp_range_stay_in_the_ball(digits, trained_mlp):
    x, y = digits[2][:20], digits[3][:20]
    lo, hi = float(x.min()) + 0.5, float(x.max()) - 0.5  # some inputs lie outside
    x_adv = Attack("pgd", "linf", epsilon=0.1, clamp=(lo, hi)).perturb(trained_mlp, x, y)
    assert float((x_adv - x).abs().max()) <= 0.1 * (1 + 1e-12)
    inside = (x >= lo) & (x <= hi)
    assert float(x_adv[inside].min()) >= lo and float(x_adv[inside].max()) <= hi


def test_perturb_is_deterministic_and_leaves_model_and_inputs_alone(digits, trained_mlp):
    x, y = digits[2][:30], digits[3][:30]
    x_copy = x.clone()
    params = {k: v.detach().clone() for k, v in trained_mlp.named_parameters()}
    trained_mlp.train()
    trained_mlp.net[1].eval()  # a mixed mode must come back as it was
    try:
        attack = Attack("pgd", "l2", epsilon=1.0, steps=4, seed=7)
        a, b = attack.perturb(trained_mlp, x, y), attack.perturb(trained_mlp, x, y)
        assert torch.equal(a, b)
        assert not torch.equal(a, Attack("pgd", "l2", epsilon=1.0, steps=4, seed=8).perturb(trained_mlp, x, y))
        gen = attack.generator()  # a training loop's generator: fresh starts per batch, reproducible per run
        c, d = attack.perturb(trained_mlp, x, y, generator=gen), attack.perturb(trained_mlp, x, y, generator=gen)
        assert not torch.equal(c, d) and torch.equal(c, a)
        assert torch.equal(x, x_copy) and not a.requires_grad
        assert trained_mlp.training and not trained_mlp.net[1].training and trained_mlp.net[2].training
        for k, v in trained_mlp.named_parameters():
            assert torch.equal(v, params[k]) and v.grad is None
    finally:
        trained_mlp.eval()
    assert torch.equal(Attack("pgd", epsilon=0.0).perturb(trained_mlp, x, y), x)


def test_robust_evaluate_reports_clean_and_robust_numbers(digits, trained_mlp):
    _, _, x, y = digits
    lo, hi = valid_range(digits[0], x)
    res = robust_evaluate(trained_mlp, x, y, Attack("pgd", "linf", epsilon=0.25, clamp=(lo, hi)), batch_size=32)
    with torch.no_grad():
        out = trained_mlp(x)
    assert res.clean_accuracy == pytest.approx(float((out.argmax(1) == y).double().mean()), abs=1e-12)
    assert res.clean_loss == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-12)
    assert res.clean_accuracy > 0.8 and res.robust_accuracy < res.clean_accuracy - 0.2
    assert res.robust_loss > res.clean_loss and res.n_samples == x.shape[0]
    none = robust_accuracy(trained_mlp, x, y, Attack("fgsm", epsilon=0.0))
    assert none == pytest.approx(res.clean_accuracy, abs=1e-12)


@pytest.mark.parametrize("kwargs,field", [
    (dict(kind="cw"), "kind"), (dict(norm="l1"), "norm"), (dict(epsilon=-0.1), "epsilon"),
    (dict(epsilon=math.inf), "epsilon"), (dict(epsilon=True), "epsilon"), (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"), (dict(step_size=0.0), "step_size"), (dict(step_size=math.nan), "step_size"),
    (dict(clamp=(1.0, 0.0)), "clamp"), (dict(clamp=(0.0,)), "clamp"), (dict(clamp=(0.0, math.inf)), "clamp"),
    (dict(random_start="yes"), "random_start"), (dict(seed=1.5), "seed"),
])
def test_bad_attack_configs_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"Attack.{field} "):
        Attack(**kwargs)


def test_attack_defaults_and_valid_range():
    assert Attack("pgd", epsilon=0.2, steps=10).resolved_step_size == pytest.approx(0.05)
    assert Attack("fgsm", epsilon=0.2).resolved_step_size == 0.2
    assert valid_range(torch.tensor([[-1.0, 2.0]]), torch.tensor([3.0])) == (-1.0, 3.0)
    with pytest.raises(ValueError, match="constant"):
        valid_range(torch.zeros(3))
    with pytest.raises(ValueError, match="non-empty"):
        valid_range()


# ---------------------------------------------------------------------------------------------- torchattacks
@pytest.fixture(scope="module")
def unit_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    ds = load_digits(n_samples=200, standardize=False, seed=1)
    x, y = (ds.x_train[:48] / 16.0).double().reshape(-1, 1, 8, 8), ds.y_train[:48]  # torchattacks' L2 wants 4-D
    model = _init(lambda: MLP(64, hidden=(16,), out_features=10), seed=4).eval()
    return model, x, y


@pytest.mark.parametrize("which", ["fgsm", "pgd", "pgdl2"])
def test_matches_torchattacks(unit_data, which):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = unit_data
    if which == "fgsm":
        ref = torchattacks.FGSM(model, eps=0.05)
        ours = Attack("fgsm", "linf", epsilon=0.05, clamp=(0.0, 1.0))
    elif which == "pgd":
        ref = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=7, random_start=False)
        ours = Attack("pgd", "linf", epsilon=0.1, step_size=0.02, steps=7, random_start=False, clamp=(0.0, 1.0))
    else:
        ref = torchattacks.PGDL2(model, eps=0.8, alpha=0.2, steps=7, random_start=False)
        ours = Attack("pgd", "l2", epsilon=0.8, step_size=0.2, steps=7, random_start=False, clamp=(0.0, 1.0))
    expected = ref(x, y)
    got = ours.perturb(model, x, y)
    assert float((expected - x).abs().max()) > 0.01
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- sharpness
def _max_quadratic_on_ball(g: np.ndarray, A: np.ndarray, R: float) -> float:
    """max_{||d|| <= R} g.d + d.A.d / 2 for symmetric PSD A (the max lies on the sphere): in A's eigenbasis
    d_i = c_i / (lam - a_i) with lam > max(a) solving ||d|| = R (secular equation, by bisection)."""
    a, V = np.linalg.eigh(A)
    c = V.T @ g
    lo, hi = a[-1] + 1e-300, a[-1] + np.linalg.norm(g) / R + 1e-12
    for _ in range(300):
        lam = 0.5 * (lo + hi)
        if np.linalg.norm(c / (lam - a)) > R:
            lo = lam
        else:
            hi = lam
    d = V @ (c / (hi - a))
    return float(g @ d + 0.5 * d @ A @ d)


@pytest.fixture(scope="module")
def quadratic() -> tuple[Objective, np.ndarray, np.ndarray]:
    """Linear regression with MSE: L(theta) = |Xa theta - y|^2 / N is exactly quadratic in theta = (w1, w2, b)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(12, 2, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 3.0], dtype=torch.float64)
    y = torch.randn(12, generator=gen, dtype=torch.float64)
    model = nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.7, -0.4]]))
        model.bias.fill_(0.3)
    obj = Objective(model, "mse", (X, y))
    Xa = torch.cat([X, torch.ones(12, 1, dtype=torch.float64)], dim=1).numpy()
    A = 2.0 / 12 * Xa.T @ Xa
    g = obj.gradient().numpy()
    return obj, A, g


def test_sharpness_of_a_quadratic_with_global_ball_is_the_closed_form(quadratic):
    obj, A, g = quadratic
    eps = 0.3
    R = eps * float(obj.theta0.norm())
    res = epsilon_sharpness(obj, eps, normalization="global", steps=300, step_size=0.05)
    expected = _max_quadratic_on_ball(g, A, R)
    assert res.sharpness == pytest.approx(expected, rel=1e-7, abs=1e-9)
    assert res.delta_norm == pytest.approx(R, rel=1e-9)
    assert res.relative == pytest.approx(expected / (1 + res.loss0), rel=1e-7)
    # the loss is exactly the quadratic, and a fine brute force over the sphere does not beat the closed form
    d = res.delta
    assert res.loss_max - res.loss0 == pytest.approx(g @ d + 0.5 * d @ A @ d, rel=1e-10)
    k = np.arange(40000) + 0.5
    phi, z = np.pi * (1 + 5 ** 0.5) * k, 1 - 2 * k / 40000
    pts = R * np.stack([np.sqrt(1 - z ** 2) * np.cos(phi), np.sqrt(1 - z ** 2) * np.sin(phi), z], axis=1)
    brute = float((pts @ g + 0.5 * np.einsum("pi,ij,pj->p", pts, A, pts)).max())
    assert brute <= expected + 1e-12 and brute == pytest.approx(expected, rel=1e-3)
    assert res.history.shape == (1, 301) and res.history[0, 0] == res.loss0


def test_sharpness_of_a_quadratic_with_filter_ball_holds_the_bias(quadratic):
    obj, A, g = quadratic
    eps = 0.2
    res = epsilon_sharpness(obj, eps, steps=300, step_size=0.05)  # one_d auto -> "zero": the bias is 1 of 3
    assert res.one_d == "zero" and res.n_fixed == 1 and res.n_groups == 1 and "held fixed" in res.convention
    R = eps * float(obj.theta0[:2].norm())  # the weight (1, 2) is one filter
    assert res.sharpness == pytest.approx(_max_quadratic_on_ball(g[:2], A[:2, :2], R), rel=1e-7, abs=1e-9)
    assert res.delta[2] == 0.0
    per_entry = epsilon_sharpness(obj, eps, steps=200, one_d="filter", restarts=2, seed=5)
    assert abs(per_entry.delta[2]) <= eps * abs(float(obj.theta0[2])) * (1 + 1e-12)
    assert per_entry.sharpness >= res.sharpness - 1e-9  # a larger ball


def test_filter_ball_boundary_is_the_filter_normalized_directions(digits, trained_mlp):
    x, y = digits[0][:64], digits[1][:64]
    obj = Objective(trained_mlp, "cross_entropy", (x, y))
    index, unit, one_d = sharpness_groups(obj.space, obj.theta0, "filter", "filter")
    assert one_d == "filter" and unit.shape[0] == 16 + 10 + 16 + 10  # weight rows + bias entries
    gen = torch.Generator().manual_seed(0)
    d = normalize_direction(torch.randn(obj.n_params, generator=gen, dtype=torch.float64), obj.theta0, obj.space,
                            "filter", "filter")
    norms = torch.zeros_like(unit).index_add_(0, index, d ** 2).sqrt()
    torch.testing.assert_close(norms, unit, rtol=1e-12, atol=0)
    eps = 0.05
    res = epsilon_sharpness(obj, eps, steps=15, restarts=2, one_d="filter")
    delta = torch.as_tensor(res.delta)
    dn = torch.zeros_like(unit).index_add_(0, index, delta ** 2).sqrt()
    assert bool((dn <= eps * unit * (1 + 1e-10)).all())
    along_random = obj.loss(obj.theta0 + eps * d) - res.loss0  # a point of the ball
    assert res.sharpness > max(along_random, 0.0) and res.history.shape == (2, 16)
    assert res.provenance["work"]["grad_passes"] == 30


def test_sharpness_edge_cases(quadratic, tmp_path):
    obj, _, _ = quadratic
    zero = epsilon_sharpness(obj, 0.0)
    assert zero.sharpness == 0.0 and zero.relative == 0.0 and zero.delta_norm == 0.0
    assert zero.history.shape == (1, 1) and zero.provenance["work"]["grad_passes"] == 0
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon"):
            epsilon_sharpness(obj, bad)
    with pytest.raises(ValueError, match="normalization"):
        epsilon_sharpness(obj, 0.1, normalization="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one_d='keep'"):
        epsilon_sharpness(obj, 0.1, one_d="keep")
    with pytest.raises(ValueError, match="steps"):
        epsilon_sharpness(obj, 0.1, steps=0)
    res = epsilon_sharpness(obj, 0.1, steps=3)
    back = SharpnessResult.load(res.save(tmp_path / "sharp"))
    assert back.sharpness == res.sharpness and np.array_equal(back.history, res.history)


# ---------------------------------------------------------------------------------------------- adversarial training
def test_adversarial_training_steps_on_the_attacks_perturbed_batches(digits):
    """One epoch of one full batch through train(attack=...) equals a hand-written step on
    attack.perturb(model, x, y) with the attack's own generator (the same random start): the loop really
    trains on adversarial inputs; the recorded losses are the clean ones."""
    from qlandscape.train import train

    x, y, _, _ = digits
    model = _init(lambda: MLP(64, hidden=(8,), out_features=10), seed=3)
    attack = Attack("pgd", "linf", epsilon=0.2, steps=3, clamp=valid_range(x), seed=5)
    trained, res = train(model, (x, y), epochs=1, lr=0.1, momentum=0.0, batch_size=x.shape[0], attack=attack,
                         progress=False)
    ref = _init(lambda: MLP(64, hidden=(8,), out_features=10), seed=3)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    x_adv = attack.perturb(ref, x[perm], y[perm], "cross_entropy", generator=attack.generator())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    F.cross_entropy(ref(x_adv), y[perm]).backward()
    opt.step()
    for p, q in zip(trained.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert res.config["attack"]["epsilon"] == 0.2 and res.config["attack"]["resolved_step_size"] == pytest.approx(
        2.5 * 0.2 / 3)
    clean = F.cross_entropy(trained(x), y).item()
    assert res.train_loss[-1] == pytest.approx(clean, rel=1e-12)
    # a standard run differs: the attack changed the update
    plain, _ = train(model, (x, y), epochs=1, lr=0.1, momentum=0.0, batch_size=x.shape[0], progress=False)
    assert max(float((p - q).detach().abs().max()) for p, q in zip(plain.parameters(), trained.parameters())) > 1e-4


def test_adversarial_training_raises_robust_accuracy(digits):
    from qlandscape.train import train

    x, y, xt, yt = digits
    model = _init(lambda: MLP(64, hidden=(32,), out_features=10), seed=0)
    attack = Attack("pgd", "linf", epsilon=0.3, steps=5, clamp=valid_range(x, xt), seed=0)
    kw = dict(epochs=6, lr=0.05, batch_size=32, progress=False)
    adv, _ = train(model, (x, y), attack=attack, **kw)
    std, _ = train(model, (x, y), **kw)
    strong = Attack("pgd", "linf", epsilon=0.3, steps=20, clamp=valid_range(x, xt), seed=1)
    assert robust_accuracy(adv, xt, yt, strong) > robust_accuracy(std, xt, yt, strong) + 0.05


def test_train_adversarial_in_the_configuration_builds_the_configured_attack():
    from qlandscape import jobs
    from qlandscape.config import RunConfig, load_config

    assert RunConfig().digest("data", "model", "train") == "0cea0f646ecc9160"  # unchanged while off
    cfg = load_config(None, ["data.n_samples=60", "train.adversarial=true", "adversarial.epsilon=0.2",
                             "adversarial.norm=l2", "adversarial.steps=4", "adversarial.eval_steps=9"])
    assert cfg.digest("train") != RunConfig().digest("train")
    ds = jobs.build_dataset(cfg)
    a, e = jobs.build_attack(cfg, ds), jobs.build_attack(cfg, ds, evaluation=True)
    assert (a.norm, a.epsilon, a.steps, e.steps) == ("l2", 0.2, 4, 9)
    assert a.clamp == valid_range(ds.x_train, ds.x_test)
    none = load_config(None, ["data.n_samples=60", "adversarial.clamp=none"])
    assert jobs.build_attack(none, ds).clamp is None


def test_the_attack_and_the_adversarial_section_share_one_source_of_defaults():
    from qlandscape.adversarial import ATTACK_KINDS, ATTACK_NORMS
    from qlandscape.config import ATTACK_KINDS as CONFIG_KINDS
    from qlandscape.config import ATTACK_NORMS as CONFIG_NORMS
    from qlandscape.config import AdversarialConfig
    a, c = Attack(), AdversarialConfig()
    assert (a.kind, a.norm, a.epsilon, a.steps, a.step_size, a.random_start) == (
        c.kind, c.norm, c.epsilon, c.steps, c.step_size, c.random_start) == ("pgd", "linf", 0.3, 7, None, True)
    assert ATTACK_KINDS is CONFIG_KINDS and ATTACK_NORMS is CONFIG_NORMS
