"""The neighbour weights and class estimate of Deep Semiparametric Learning, by hand and by gradcheck."""

import numpy as np
import pytest
import torch
from torch import nn

from sksemiparam.nn import (
    SemiparametricNet,
    in_batch_class_estimate,
    inverse_distance_log_weights,
    kernels,
    pairwise_sq_distances,
    soft_neighbor_class_estimate,
)

# Four points on a line, two classes: v = 0, 1 (class 0) and 3, 4 (class 1).
V = torch.tensor([[0.0], [1.0], [3.0], [4.0]], dtype=torch.float64)
Y = torch.tensor([0, 0, 1, 1])


def test_four_point_weights_by_hand():
    # Squared distances from v=0 to 1, 3, 4 are 1, 9, 16; with tau=2, w = 1, 1/81, 1/256,
    # normalised by 1 + 1/81 + 1/256 = 21073/20736.
    log_w = inverse_distance_log_weights(pairwise_sq_distances(V, V), 2.0, ~torch.eye(4, dtype=torch.bool))
    w = log_w.exp()
    np.testing.assert_allclose(w[0, 1:], [20736 / 21073, 256 / 21073, 81 / 21073], rtol=1e-12)
    assert w[0, 0] == 0  # j != i
    # From v=1: distances 1, 4, 9 -> w = 1, 1/16, 1/81, normalised by 1393/1296.
    np.testing.assert_allclose(w[1, [0, 2, 3]], [1296 / 1393, 81 / 1393, 16 / 1393], rtol=1e-12)


def test_four_point_class_estimate_by_hand():
    mask = ~torch.eye(4, dtype=torch.bool)
    est = soft_neighbor_class_estimate(pairwise_sq_distances(V, V), Y, 2, 2.0, mask)
    expected = [
        [20736 / 21073, 337 / 21073],
        [1296 / 1393, 97 / 1393],
        [97 / 1393, 1296 / 1393],
        [337 / 21073, 20736 / 21073],
    ]
    np.testing.assert_allclose(est.numpy(), expected, rtol=1e-12)


def test_network_in_batch_estimate_matches_hand_computation():
    net = SemiparametricNet(embedding=nn.Identity(), embedding_dim=1, n_classes=2, tau=2.0).double()
    est = net.in_batch_estimate(V, Y)
    assert est[0, 0].item() == pytest.approx(20736 / 21073, rel=1e-12)
    assert est[2, 1].item() == pytest.approx(1296 / 1393, rel=1e-12)


def test_tau_sharpens_the_estimate():
    mask = ~torch.eye(4, dtype=torch.bool)
    d = pairwise_sq_distances(V, V)
    soft = soft_neighbor_class_estimate(d, Y, 2, 0.5, mask)[1, 0]
    sharp = soft_neighbor_class_estimate(d, Y, 2, 4.0, mask)[1, 0]
    assert 0.5 < soft < sharp < 1


def test_duplicates_give_finite_values_and_gradients():
    v = torch.tensor([[1.0, 2.0], [1.0, 2.0], [5.0, 5.0]], requires_grad=True)
    y = torch.tensor([0, 1, 1])
    est = soft_neighbor_class_estimate(
        pairwise_sq_distances(v, v), y, 2, 2.0, ~torch.eye(3, dtype=torch.bool)
    )
    assert torch.isfinite(est).all()
    # The duplicate dominates row 0's estimate: its class is 1.
    assert est[0, 1] > 0.999
    est[:, 0].sum().backward()
    assert torch.isfinite(v.grad).all()


def test_row_without_neighbours_is_uniform():
    est = soft_neighbor_class_estimate(
        torch.zeros(1, 1), torch.tensor([2]), 3, 2.0, torch.zeros(1, 1, dtype=torch.bool)
    )
    np.testing.assert_allclose(est.numpy(), [[1 / 3, 1 / 3, 1 / 3]])


def test_per_row_labels_match_shared_labels():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(5, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (7,), generator=g)
    shared = soft_neighbor_class_estimate(d, labels, 3, 2.0)
    per_row = soft_neighbor_class_estimate(d, labels.expand(5, 7), 3, 2.0)
    np.testing.assert_allclose(shared.numpy(), per_row.numpy(), rtol=1e-12)


def test_gradcheck_class_estimate():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = ~torch.eye(6, dtype=torch.bool)

    def fn(v):
        return soft_neighbor_class_estimate(pairwise_sq_distances(v, v), y, 3, 2.0, mask)

    assert torch.autograd.gradcheck(fn, (v,))


def test_pairwise_sq_distances_matches_numpy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 5, generator=g, dtype=torch.float64)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64)
    expected = ((a.numpy()[:, None, :] - b.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_sq_distances(a, b).numpy(), expected, rtol=1e-10, atol=1e-12)


def _generic_in_batch(v, y, n_classes, tau):
    mask = ~torch.eye(v.shape[0], dtype=torch.bool)
    return soft_neighbor_class_estimate(pairwise_sq_distances(v, v), y, n_classes, tau, mask)


@pytest.mark.parametrize("tau", [0.5, 2.0, 3.0])
def test_fused_in_batch_estimate_equals_the_generic_one(tau):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(40, 5, generator=g, dtype=torch.float64)
    v[7] = v[3]  # a duplicate: distance 0
    y = torch.randint(0, 4, (40,), generator=g)
    weights = torch.randn(40, 4, generator=g, dtype=torch.float64)
    a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
    ea, eb = _generic_in_batch(a, y, 4, tau), in_batch_class_estimate(b, y, 4, tau)
    (ea * weights).sum().backward()
    (eb * weights).sum().backward()
    np.testing.assert_allclose(eb.detach().numpy(), ea.detach().numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_fused_in_batch_estimate_small_tau_in_float32(tau):
    # The cap on r = d / d_min must be a finite float32: it overflowed for tau < ~1 before.
    g = torch.Generator().manual_seed(3)
    v = torch.randn(40, 5, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    est = in_batch_class_estimate(v.clone().requires_grad_(), y, 4, tau)
    assert torch.isfinite(est).all()
    expected = _generic_in_batch(v.double(), y, 4, tau)
    np.testing.assert_allclose(est.detach().numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_fused_in_batch_estimate_by_hand_and_gradcheck():
    est = in_batch_class_estimate(V, Y, 2, 2.0)
    assert est[0, 0].item() == pytest.approx(20736 / 21073, rel=1e-12)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda v: in_batch_class_estimate(v, y, 3, 2.0), (v,))


def test_fused_in_batch_estimate_single_row_and_float32_extremes():
    np.testing.assert_allclose(
        in_batch_class_estimate(torch.ones(1, 3), torch.tensor([1]), 2, 2.0), [[0.5, 0.5]]
    )
    # Far-apart points with a near duplicate: no overflow, no NaN, no subnormal weights.
    v = torch.tensor([[0.0, 0.0], [1e-7, 0.0], [1e4, 0.0], [-1e4, 5.0]], requires_grad=True)
    est = in_batch_class_estimate(v, torch.tensor([0, 1, 1, 0]), 2, 4.0)
    assert torch.isfinite(est).all()
    est[:, 0].sum().backward()
    assert torch.isfinite(v.grad).all()


def _torch_ops_only(monkeypatch):
    """Make the CPU run the in-batch estimate with torch's operators, as CUDA does."""
    monkeypatch.setattr(kernels, "_cpu_kernels", lambda v: None)


def test_cpu_runs_the_compiled_kernels_for_float32_and_float64():
    assert kernels._cpu_kernels(torch.zeros(2, 2)) is not None
    assert kernels._cpu_kernels(torch.zeros(2, 2, dtype=torch.float64)) is not None
    assert kernels._cpu_kernels(torch.zeros(2, 2, dtype=torch.float16)) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 3.0, 60.0])
def test_compiled_cpu_kernels_equal_torch_operators(monkeypatch, dtype, tau):
    # The same estimate and gradient as the torch operators CUDA runs: duplicates in float64
    # (clamped distances), far rows (r capped for tau = 60), every tau branch (2 is a special case).
    g = torch.Generator().manual_seed(4)
    v = torch.randn(67, 6, generator=g, dtype=torch.float64)  # 67: not a multiple of the 16 lanes
    if dtype == torch.float64:  # in float32 a duplicate's distance is rounding noise around 0
        v[5] = v[2]
        v[9] = v[2]
    v[11] *= 50.0
    y = torch.randint(0, 5, (67,), generator=g)
    weights = torch.randn(67, 5, generator=g, dtype=torch.float64)

    def estimate_and_grad():
        x = v.to(dtype).requires_grad_()
        est = in_batch_class_estimate(x, y, 5, tau, kernels.ScratchPool())
        (est * weights.to(dtype)).sum().backward()
        return est.detach().double(), x.grad.double()

    compiled = estimate_and_grad()
    _torch_ops_only(monkeypatch)
    reference = estimate_and_grad()
    rtol = 1e-10 if dtype == torch.float64 else 2e-4
    for a, b in zip(compiled, reference):
        assert torch.isfinite(a).all()
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=rtol * float(b.abs().max()))


def test_compiled_kernels_reuse_pool_buffers_across_steps():
    # Buffers go back to the pool after the backward pass (and after a no-grad forward), so a
    # training loop allocates no new (B, B) array per step, and reuse does not change results.
    g = torch.Generator().manual_seed(5)
    v = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    pool = kernels.ScratchPool()
    first = in_batch_class_estimate(v.clone().requires_grad_(), y, 3, 2.0, pool)
    first.sum().backward()
    held = {key: buf.data_ptr() for key, buf in pool._free.items()}
    assert len(held) == 3  # d and w of the forward, dL/dd of the backward
    with torch.no_grad():
        again = in_batch_class_estimate(v, y, 3, 2.0, pool)
    np.testing.assert_allclose(again.numpy(), first.detach().numpy(), rtol=1e-12)
    assert {key: buf.data_ptr() for key, buf in pool._free.items()} == held


@pytest.mark.parametrize("compiled", [True, False])
def test_a_nan_embedding_makes_the_estimate_nan_not_a_neighbour(compiled, monkeypatch):
    # A NaN row must not become every row's nearest neighbour (finite, wrong estimates): both the
    # compiled CPU kernels and torch's operators propagate it.
    if not compiled:
        _torch_ops_only(monkeypatch)
    v = torch.randn(20, 3, generator=torch.Generator().manual_seed(7))
    v[4, 1] = float("nan")
    est = in_batch_class_estimate(v, torch.arange(20) % 3, 3, 2.0)
    assert torch.isnan(est).all()
