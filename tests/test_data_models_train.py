import numpy as np
import pytest
import torch

from qlandscape import MLP, NonFiniteLossError, SmallCNN, TrainResult, load_digits, train
from qlandscape.data import downsample_images


def test_digits_multiclass_split_is_standardized_and_stratified():
    d = load_digits(seed=0)
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert d.n_classes == 10 and d.image_shape == (8, 8)
    assert torch.allclose(d.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert set(d.y_test.tolist()) == set(range(10))


def test_binary_pair_relabels_and_downsampling_pools():
    d = load_digits(classes=(5, 3), downsample=4, images=True, seed=1)
    assert d.classes == (3, 5) and set(d.y_train.tolist()) == {0, 1}
    assert d.x_train.shape[1:] == (1, 4, 4)
    imgs = np.arange(2 * 8 * 8, dtype=float).reshape(2, 8, 8)
    pooled = downsample_images(imgs, 4)
    assert pooled[0, 0, 0] == pytest.approx(imgs[0, :2, :2].mean())


@pytest.mark.parametrize("kwargs, match", [
    (dict(downsample=3), "divide"),
    (dict(classes=(1,)), "classes"),
    (dict(classes=(1, 12)), "classes"),
    (dict(test_size=1.5), "test_size"),
])
def test_bad_dataset_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits(**kwargs)


def test_models_produce_logits_of_the_right_shape():
    x = torch.randn(3, 1, 8, 8)
    assert MLP(64, (16,), 10)(x).shape == (3, 10)
    assert SmallCNN(1, (4, 4), 10)(x).shape == (3, 10)
    with pytest.raises(ValueError, match="images"):
        SmallCNN()(torch.randn(3, 64))
    with pytest.raises(ValueError, match="activation"):
        MLP(4, (3,), 2, activation="swish2")


def test_model_defaults_have_no_dropout_or_batchnorm_layers():
    # the state-dict layout (and so every saved model) of the defaults is unchanged by the new options
    assert list(SmallCNN(1, (4, 4), 10).state_dict()) == ["features.0.weight", "features.0.bias",
                                                          "features.2.weight", "features.2.bias",
                                                          "head.weight", "head.bias"]
    assert [type(m).__name__ for m in MLP(64, (16,), 10).net] == ["Flatten", "Linear", "Tanh", "Linear"]


@pytest.mark.parametrize("model, norm", [
    (lambda **kw: MLP(64, (16, 8), 10, **kw), "BatchNorm1d"),
    (lambda **kw: SmallCNN(1, (4, 4), 10, **kw), "BatchNorm2d"),
])
def test_dropout_and_batchnorm_follow_each_hidden_layer(model, norm):
    m = model(dropout=0.3, batchnorm=True)
    names = [type(x).__name__ for x in m.modules()]
    assert names.count(norm) == 2 and names.count("Dropout") == 2
    assert all(x.p == 0.3 for x in m.modules() if isinstance(x, torch.nn.Dropout))
    x = torch.randn(5, 1, 8, 8)
    m.eval()
    assert torch.equal(m(x), m(x))  # eval mode: deterministic
    m.train()
    assert not torch.equal(m(x), m(x))  # train mode: dropout masks are random


@pytest.mark.parametrize("dropout", [1.0, -0.1, 1.5, True])
def test_dropout_outside_zero_one_is_refused(dropout):
    for make in (lambda: MLP(4, (3,), 2, dropout=dropout), lambda: SmallCNN(1, (2,), 2, dropout=dropout)):
        with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)"):
            make()


def test_training_is_deterministic_records_a_trajectory_and_leaves_the_input_model_alone():
    d = load_digits(n_samples=200, seed=0)
    torch.manual_seed(0)
    m0 = MLP(64, (16,), 10)
    before = {k: v.clone() for k, v in m0.state_dict().items()}
    m1, r1 = train(m0, d, epochs=4, lr=0.05, batch_size=32, record_every=2, progress=False)
    m2, r2 = train(m0, d, epochs=4, lr=0.05, batch_size=32, record_every=2, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in m0.state_dict().items())
    assert np.array_equal(r1.trajectory, r2.trajectory)
    assert r1.trajectory.shape == (3, 64 * 16 + 16 + 16 * 10 + 10)
    assert list(r1.steps) == [0, 10, 20]  # 160 training samples, 5 steps per epoch
    assert r1.train_loss[-1] < r1.train_loss[0]
    flat = np.concatenate([p.detach().numpy().ravel() for p in m1.parameters()])
    assert np.allclose(r1.trajectory[-1], flat)


def test_nan_during_training_raises_and_keeps_the_finished_part(tmp_path):
    d = load_digits(n_samples=100, seed=0)
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLossError, match="lower the learning rate") as info:
        train(MLP(64, (16,), 10, activation="relu"), d, epochs=50, lr=1e6, optimizer="sgd", progress=False)
    partial = info.value.partial
    assert isinstance(partial, TrainResult) and partial.trajectory.shape[0] >= 1
    back = TrainResult.load(partial.save(tmp_path / "partial"))
    assert np.array_equal(back.trajectory, partial.trajectory)
