"""AdamW on the rows a step reaches (the Impostor Network's loose centres) against dense AdamW."""

import numpy as np
import pytest
import torch

from sksemiparam import ImpostorClassifier
from sksemiparam._lazy_adam import LazyRowAdamW

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _both(scale, weight_decay, *, steps=400, n=40, d=3, touch=0.05, seed=0):
    """Dense torch.optim.AdamW and the lazy rows on the same sparse gradients; both parameters."""
    gen = torch.Generator().manual_seed(seed)
    init = torch.randn(n, d, generator=gen)
    dense, lazy = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    dense_opt = torch.optim.AdamW([dense], lr=1e-2, weight_decay=weight_decay)
    rows_opt = LazyRowAdamW(lazy, torch.optim.AdamW([lazy], lr=1e-2, weight_decay=weight_decay))
    for t in range(steps):
        touched = torch.rand(n, generator=gen) < touch
        touched[0] = t in (0, steps - 1)  # row 0: idle for the whole run in between
        rows = torch.nonzero(touched)[:, 0]
        grad = torch.randn(rows.numel(), d, generator=gen) * scale
        full = torch.zeros(n, d)
        full[rows] = grad
        dense.grad = full
        dense_opt.step()
        rows_opt.catch_up(rows)
        rows_opt.step(rows, grad)
    rows_opt.catch_up()
    return init, dense.detach(), lazy.detach(), dense_opt.state[dense], rows_opt.state


@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 1.0])
def test_lazy_rows_take_dense_adamw_steps(weight_decay):
    # Gradients far above eps: every row, touched or idle for up to the whole run, ends where dense
    # AdamW puts it, moments included.
    init, dense, lazy, dense_state, lazy_state = _both(1.0, weight_decay)
    moved = (dense - init).abs().max()
    assert (dense - lazy).abs().max() <= 1e-4 * moved
    assert (lazy[0] - init[0]).abs().max() > 0.1 * moved  # row 0 moved while idle, as in dense AdamW
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(lazy_state[key], dense_state[key], rtol=1e-5, atol=1e-7)
    assert float(lazy_state["step"]) == float(dense_state["step"]) == 400
    assert (lazy_state["row_step"] == 400).all()


@pytest.mark.parametrize("scale", [1.0, 1e-7])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_compiled_cpu_rows_equal_torch_operators(weight_decay, scale, monkeypatch):
    # On the CPU catch-up and step run as numba loops over the rows (_cpu_kernels); CUDA runs the
    # same arithmetic as torch operators. Both, on the same sparse gradients, to float rounding;
    # gradients near eps (1e-7) check eps' of the idle steps too.
    import sksemiparam._cpu_kernels as compiled
    from sksemiparam import _lazy_adam

    calls = []
    for name in ("adamw_catch_up_rows", "adamw_step_rows"):
        kernel = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    _, _, fast, _, fast_state = _both(scale, weight_decay, steps=200)
    assert set(calls) == {"adamw_catch_up_rows", "adamw_step_rows"}
    monkeypatch.setattr(_lazy_adam, "_USE_COMPILED", False)
    calls.clear()
    _, _, ops, _, ops_state = _both(scale, weight_decay, steps=200)
    assert not calls
    init = _both(scale, weight_decay, steps=1)[0]
    moved = float((ops - init).abs().max())
    assert float((fast - ops).abs().max()) <= 1e-5 * moved
    for key in ("exp_avg", "exp_avg_sq", "row_step"):
        torch.testing.assert_close(fast_state[key], ops_state[key], rtol=1e-5, atol=0)


def test_rows_out_of_range_raise_instead_of_writing_past_the_parameter():
    # The compiled loops do not check bounds: such rows take torch's operators, which raise.
    param = torch.nn.Parameter(torch.zeros(5, 2))
    rows_opt = LazyRowAdamW(param, torch.optim.AdamW([param], lr=1e-2))
    rows_opt.step(torch.tensor([1]), torch.ones(1, 2))
    for bad in ([5], [-1]):
        with pytest.raises((IndexError, RuntimeError)):
            rows_opt.catch_up(torch.tensor(bad))


def test_gradients_near_eps_stay_close_to_dense_adamw():
    # The one approximation: eps in the idle steps, taken at one step instead of at each.
    init, dense, lazy, _, _ = _both(1e-4, 0.0)
    assert (dense - lazy).abs().max() <= 2e-3 * (dense - init).abs().max()
    init, dense, lazy, _, _ = _both(1e-7, 0.0)
    assert (dense - lazy).abs().max() <= 2e-2 * (dense - init).abs().max()


def test_a_weight_decay_without_a_lazy_form_updates_every_row():
    param = torch.nn.Parameter(torch.zeros(4, 2))
    assert not LazyRowAdamW(param, torch.optim.AdamW([param], lr=1e-3, weight_decay=1.0)).dense
    assert LazyRowAdamW(param, torch.optim.AdamW([param], lr=0.5, weight_decay=1.0)).dense


def _fit(monkeypatch, lazy, X, y, **params):
    """An Impostor Network whose loose centres take lazy row steps (every step), or dense AdamW."""
    if lazy:
        monkeypatch.setattr(ImpostorClassifier, "_LAZY_ROWS_FACTOR", 0)
    else:
        monkeypatch.setattr(LazyRowAdamW, "dense", property(lambda self: True))
    clf = ImpostorClassifier(random_state=0, device="cpu", **params).fit(X, y)
    monkeypatch.undo()
    return clf


@pytest.mark.parametrize("candidates", [64, None])
def test_impostor_centres_train_as_with_dense_adamw(candidates, digits, monkeypatch):
    # Sampled candidates and the paper's search both read a few rows per step; the centres end
    # where torch's AdamW over all of them puts them, and so do the predictions.
    X_train, X_test, y_train, _ = digits
    X, y = X_train[:300], y_train[:300]
    params = {"candidates": candidates, "max_epochs": 3}
    lazy, dense = _fit(monkeypatch, True, X, y, **params), _fit(monkeypatch, False, X, y, **params)
    assert "row_step" in lazy._get_optimizer().state[lazy.module_.centers]
    assert "row_step" not in dense._get_optimizer().state[dense.module_.centers]
    centres = dense.module_.centers.detach()
    assert (centres - dense._embed_rows(dense.memory_.X)).abs().max() > 0  # the centres moved
    assert (lazy.module_.centers.detach() - centres).abs().max() <= 1e-3 * centres.abs().max()
    np.testing.assert_allclose(lazy.predict_proba(X_test), dense.predict_proba(X_test), atol=1e-3)


def test_lazy_rows_only_where_the_centres_outnumber_the_rows_a_step_reaches(digits):
    # 1,257 centres, 20 + 16 rows reached per step: lazy. 300 centres, 100 + 64: dense AdamW.
    X_train, _, y_train, _ = digits
    big = ImpostorClassifier(candidates=16, batch_size=20, max_epochs=1, random_state=0, device="cpu")
    small = ImpostorClassifier(candidates=64, max_epochs=1, random_state=0, device="cpu")
    big.fit(X_train, y_train)
    small.fit(X_train[:300], y_train[:300])
    assert "row_step" in big._get_optimizer().state[big.module_.centers]
    assert "row_step" not in small._get_optimizer().state[small.module_.centers]
    # Switching to dense AdamW between calls first brings every row up to date.
    state = big._get_optimizer().state[big.module_.centers]
    big.set_params(batch_size=200).partial_fit(X_train[:50], y_train[:50])
    assert "row_step" not in state


def test_continual_add_and_drop_keeps_each_rows_step(digits, monkeypatch):
    # Centres added and dropped between steps keep their moments and their "up to date" step.
    X_train, _, y_train, _ = digits
    old, new = y_train < 5, y_train >= 5
    results = []
    for lazy in (True, False):
        if lazy:
            monkeypatch.setattr(ImpostorClassifier, "_LAZY_ROWS_FACTOR", 0)
        else:
            monkeypatch.setattr(LazyRowAdamW, "dense", property(lambda self: True))
        clf = ImpostorClassifier(
            candidates=32, n_add=30, n_drop=10, max_epochs=2, random_state=0, device="cpu"
        )
        clf.partial_fit(X_train[old][:200], y_train[old][:200], classes=np.arange(10))
        clf.partial_fit(X_train[new][:100], y_train[new][:100])
        monkeypatch.undo()
        results.append(clf.module_.centers.detach().clone())
        state = clf._get_optimizer().state[clf.module_.centers]
        assert state["exp_avg"].shape == clf.module_.centers.shape
        if lazy:
            assert (state["row_step"] == state["step"]).all()  # every row up to date at the end
    torch.testing.assert_close(results[0], results[1], rtol=1e-3, atol=1e-4)
