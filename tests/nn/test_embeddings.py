import pytest
import torch
from torch import nn

from sksemiparam.nn import ConvEmbedding, MLPEmbedding, make_embedding


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
