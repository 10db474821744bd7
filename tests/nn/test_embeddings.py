import math

import pytest
import torch
from torch import nn

from sksemiparam.nn import ConvEmbedding, MLPEmbedding, PeriodicEmbedding, make_embedding


def test_mlp_embedding_shapes_and_final_activation():
    net = MLPEmbedding(in_features=5, hidden_layer_sizes=(8, 4), embedding_dim=3)
    assert net(torch.randn(7, 5)).shape == (7, 3)
    assert (net(torch.randn(50, 5)) >= 0).all()  # ReLU on the embedding
    linear_end = MLPEmbedding(in_features=5, hidden_layer_sizes=(8,), embedding_dim=3, final_activation=False)
    assert isinstance(linear_end.layers[-1], nn.Linear)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_embedding_is_appendix_b_network(shape):
    net = ConvEmbedding(image_shape=shape, embedding_dim=128)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 2
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    x = torch.randn(2, shape[0] * shape[1] * shape[2])
    assert net(x).shape == (2, 128)


def test_make_embedding_errors():
    with pytest.raises(ValueError, match="needs `image_shape`"):
        make_embedding("conv", in_features=784, hidden_layer_sizes=(), embedding_dim=8, image_shape=None)
    with pytest.raises(ValueError, match=r"holds 784 values but X has 100 features"):
        make_embedding(
            "conv", in_features=100, hidden_layer_sizes=(), embedding_dim=8, image_shape=(1, 28, 28)
        )
    with pytest.raises(TypeError, match="must return a torch.nn.Module"):
        make_embedding(
            lambda n, e: None, in_features=4, hidden_layer_sizes=(), embedding_dim=8, image_shape=None
        )
    with pytest.raises(ValueError, match=r"must return \(n, embedding_dim\)"):
        make_embedding(
            lambda n, e: nn.Linear(n, e + 1),
            in_features=4,
            hidden_layer_sizes=(),
            embedding_dim=8,
            image_shape=None,
        )


def test_make_embedding_accepts_a_factory():
    net = make_embedding(
        lambda n, e: nn.Sequential(nn.Linear(n, e), nn.Tanh()),
        in_features=4,
        hidden_layer_sizes=(),
        embedding_dim=6,
        image_shape=None,
    )
    assert net(torch.randn(3, 4)).shape == (3, 6)


def test_periodic_embedding_is_plr_on_a_hand_example():
    # One feature x = 0.25, frequencies 1 and 0.5: periodic features [cos(pi/2), cos(pi/4),
    # sin(pi/2), sin(pi/4)] = [0, r, 1, r] with r = sqrt(2)/2; a linear map to 2 then ReLU.
    plr = PeriodicEmbedding(in_features=1, n_frequencies=2, d_embedding=2)
    r = math.sqrt(2) / 2
    with torch.no_grad():
        plr.frequencies.copy_(torch.tensor([[1.0, 0.5]]))
        plr.linear.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 0.0]]))
        plr.linear.bias.copy_(torch.tensor([0.0, -0.5]))
    out = plr(torch.tensor([[0.25]]))
    torch.testing.assert_close(out, torch.tensor([[2 * r + 1, 0.0]]))  # relu(-0 - 0.5) = 0


def test_periodic_embedding_per_feature_maps_and_shapes():
    torch.manual_seed(0)
    lite = PeriodicEmbedding(in_features=3, n_frequencies=4, d_embedding=5)
    full = PeriodicEmbedding(in_features=3, n_frequencies=4, d_embedding=5, lite=False)
    x = torch.randn(6, 3)
    assert lite(x).shape == full(x).shape == (6, 15)
    assert lite.out_features == 15
    # Without ``lite`` each feature has its own map: feature 1's block uses weight[1] only.
    with torch.no_grad():
        full.weight[0].zero_()
        full.bias[0].fill_(-1.0)
    assert torch.all(full(x)[:, :5] == 0)
    # Frequencies start from N(0, scale^2), truncated at 3 scales.
    wide = PeriodicEmbedding(in_features=50, n_frequencies=100, frequency_scale=0.1)
    assert wide.frequencies.abs().max() <= 0.3
    assert 0.07 < float(wide.frequencies.detach().std()) < 0.11
    with pytest.raises(ValueError, match="frequency_scale"):
        PeriodicEmbedding(in_features=2, frequency_scale=0.0)


def test_mlp_embedding_batch_norm_dropout_and_plr():
    torch.manual_seed(0)
    net = MLPEmbedding(
        in_features=4, hidden_layer_sizes=(8,), embedding_dim=3, batch_norm=True, dropout=0.5, periodic={}
    )
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["PeriodicEmbedding", "Linear", "_BatchNorm1d", "ReLU", "Dropout", "Linear", "ReLU"]
    assert net.layers[1].in_features == 4 * 24  # rtdl's 24 dimensions per feature
    net.train()
    assert net(torch.randn(5, 4)).shape == (5, 3)
    # A one-row training batch (an epoch's last) is normalised with the running statistics.
    assert torch.isfinite(net(torch.randn(1, 4))).all()
    net.eval()
    x = torch.randn(5, 4)
    torch.testing.assert_close(net(x), net(x))  # no dropout in eval mode
    with pytest.raises(ValueError, match="dropout"):
        MLPEmbedding(in_features=4, dropout=1.0)
