"""AdamW on a few rows of a large parameter per step, equal to AdamW on the whole parameter.

The Impostor Network's loose centres are one parameter row per training example (60,000 x 64 on
MNIST), and a training step gives a gradient to a few hundred rows only (the drawn candidates and
the batch's own centres). Dense AdamW reads and writes every row every step: on MNIST it was two
thirds of a training step (the dense gradient, then the update). This module updates the touched
rows only and brings an untouched row up to date when it is next read, with the updates dense AdamW
would have made in between: a row with zero gradient still moves (its first moment decays
geometrically, its weight decay continues), and after n idle steps from the row's last update s,

    m <- beta1^n m,    v <- beta2^n v,
    p <- (1 - lam)^n p - lr * K(s, n) * m_s / (sqrt(v_s) + eps'),

with lam = lr * weight_decay and K(s, n) = sum_{j=1..n} (1 - lam)^(n-j) r^j c(s+j), where
r = beta1 / sqrt(beta2) and c(u) = sqrt(1 - beta2^u) / (1 - beta1^u) (the bias corrections at global
step u). K comes from a table over global steps, G(u) = sum_{i>=1} rho^i c(u+i) with
rho = r / (1 - lam): K(s, n) = (1 - lam)^n (G(s) - rho^n G(s+n)). The one approximation is in eps:
dense AdamW divides by sqrt(v_u) + eps at every idle step u, where v_u shrinks by beta2 per step;
here eps' = eps sqrt(1 - beta2^(s+j)) / beta2^(j/2), its value j = min(n, r / (1 - r)) ~ 9 steps
after s (the idle steps' weighted mean distance), for all of them. Where sqrt(v) >> eps (any
gradient that moved the row) the two agree to float rounding (``tests/test_lazy_adam.py`` checks
both regimes against ``torch.optim.AdamW``).

The state lives in the optimizer's own ``state[param]`` (``exp_avg``, ``exp_avg_sq``, ``step``, as
AdamW keeps them, plus ``row_step``: the global step each row is up to date with), so it is saved,
loaded and resized with the rest. During lazy steps the parameter has no ``.grad``, so AdamW's own
step skips it; a caller that switches to AdamW's dense step first brings every row up to date and
drops ``row_step`` (``ImpostorClassifier._step``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

# G(u) is summed until rho^i < this (then the terms are below float64 resolution).
_TAIL = 1e-18
# Above this rho (weight decay near lr^-1) the series converges too slowly for a table: ``dense``
# is then True and the caller uses AdamW's dense step instead.
_MAX_RHO = 0.999
_TABLE_CHUNK = 4096
# CPU: the row updates as numba kernels (``_cpu_kernels``); tests switch it off to check them against
# torch's operators, which CUDA runs.
_USE_COMPILED = True


class LazyRowAdamW:
    """AdamW for one 2-D parameter whose gradient reaches few rows per step.

    Parameters
    ----------
    param : Parameter (N, d)
        Updated in place (its ``.data``); never given a ``.grad``.
    optimizer : torch.optim.AdamW
        Holds ``param`` in a group (for ``lr``, ``betas``, ``eps``, ``weight_decay``) and the state.
    """

    def __init__(self, param: torch.nn.Parameter, optimizer: torch.optim.Optimizer) -> None:
        self.param = param
        self.optimizer = optimizer
        self.group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
        if self.group.get("amsgrad") or self.group.get("maximize"):
            raise ValueError("lazy row updates implement AdamW without amsgrad or maximize")

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> dict:
        state = self.optimizer.state[self.param]
        data = self.param.data
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(data)
            state["exp_avg_sq"] = torch.zeros_like(data)
            state["step"] = torch.zeros((), dtype=torch.float32, device=data.device)
        if "row_step" not in state:  # a fresh state, or one dense AdamW kept (every row up to date)
            state["row_step"] = torch.full((data.shape[0],), float(state["step"]), device=data.device)
        return state

    def _hyper(self):
        beta1, beta2 = self.group["betas"]
        lam = self.group["lr"] * self.group["weight_decay"]
        return float(self.group["lr"]), float(beta1), float(beta2), float(self.group["eps"]), lam

    @property
    def dense(self) -> bool:
        """True when the idle-step series does not converge fast enough: update every row."""
        _, beta1, beta2, _, lam = self._hyper()
        return beta1 / math.sqrt(beta2) / (1.0 - lam) > _MAX_RHO

    def _compiled(self, rows: torch.Tensor):
        """``_cpu_kernels`` where parameter, moments and rows are contiguous CPU float32/float64
        arrays numba can update in place (one loop over the rows instead of some thirty torch
        operators a call); else None (torch's operators, as on CUDA)."""
        if not _USE_COMPILED:
            return None
        state = self.optimizer.state[self.param]
        arrays = (self.param.data, state["exp_avg"], state["exp_avg_sq"])
        if rows.device.type != "cpu" or rows.dtype != torch.int64:
            return None
        if any(a.device.type != "cpu" or a.dtype not in (torch.float32, torch.float64) for a in arrays):
            return None
        if not all(a.is_contiguous() for a in arrays) or state["row_step"].dtype != torch.float32:
            return None
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.param.shape[0]):
            return None  # the compiled loops do not check bounds: torch's operators raise IndexError
        from . import _cpu_kernels  # lazy: numba's import and first compile cost about a second

        return _cpu_kernels

    # -------------------------------------------------------------- the table
    def _table(self, upto: int) -> torch.Tensor:
        """Columns G(u) and sqrt(1 - beta2^u), float64, for u = 0 .. at least ``upto`` + 4096."""
        _, beta1, beta2, _, lam = self._hyper()
        size = (upto // _TABLE_CHUNK + 2) * _TABLE_CHUNK
        return _g_table(size, beta1, beta2, lam, self.param.device)

    # ------------------------------------------------------------- the update
    def catch_up(self, rows: torch.Tensor | None = None) -> None:
        """Bring ``rows`` (all when None) to the current step: dense AdamW's updates for the steps
        since each row's last update, in which its gradient was zero."""
        if self.dense:  # every row is updated every step: none is behind
            return
        state = self.state
        now = int(state["step"])
        row_step = state["row_step"]
        if rows is None:
            rows = torch.arange(row_step.shape[0], device=row_step.device)
        if rows.numel() == 0:
            return
        lr, beta1, beta2, eps, lam = self._hyper()
        r = beta1 / math.sqrt(beta2)
        compiled = self._compiled(rows)
        if compiled is not None:
            table = self._table(now).numpy()
            m, v, p = state["exp_avg"], state["exp_avg_sq"], self.param.data
            compiled.adamw_catch_up_rows(
                p.numpy(), m.numpy(), v.numpy(), row_step.numpy(), rows.numpy(), now,
                table[:, 0], table[:, 1], lr, beta1, beta2, eps, lam, round(r / (1 - r)),
            )  # fmt: skip
            return
        s = row_step.index_select(0, rows).long()
        n = now - s  # idle steps; 0 for rows already up to date (then nothing below changes them)
        # Per row, in float64: beta1^n, beta2^n, (1 - lam)^n, rho^n and beta2^(-j/2) in one exp.
        logs = torch.tensor(
            [math.log(beta1), math.log(beta2), math.log1p(-lam), math.log(r) - math.log1p(-lam), 1.0],
            dtype=torch.float64,
            device=rows.device,
        )
        # eps at the idle steps' weighted mean distance j = r / (1 - r) from s (about 9 steps).
        j = n.clamp(max=round(r / (1 - r))).clamp_min(1)
        nf = n.double()[:, None].expand(-1, 5).clone()
        nf[:, 4] = j * (-0.5 * math.log(beta2))
        powers = torch.exp(nf * logs)
        table = self._table(now)
        g_s = table[s]
        k = powers[:, 2] * (g_s[:, 0] - powers[:, 3] * table[s + n, 0])
        eps_j = eps * table[s + j, 1] * powers[:, 4]
        coef = torch.stack([k * lr, powers[:, 2], powers[:, 0], powers[:, 1], eps_j], 1).to(self.param.dtype)
        m, v, p = state["exp_avg"], state["exp_avg_sq"], self.param.data
        m_s, v_s = m.index_select(0, rows), v.index_select(0, rows)
        p_new = coef[:, 1:2] * p.index_select(0, rows) - coef[:, 0:1] * m_s / (v_s.sqrt() + coef[:, 4:5])
        _write_rows(p, rows, p_new)
        _write_rows(m, rows, coef[:, 2:3] * m_s)
        _write_rows(v, rows, coef[:, 3:4] * v_s)
        row_step.index_fill_(0, rows, float(now))

    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """One AdamW step in which only ``rows`` (unique, already caught up) have a gradient."""
        state = self.state
        state["step"] += 1
        t = int(state["step"])
        lr, beta1, beta2, eps, lam = self._hyper()
        m, v, p = state["exp_avg"], state["exp_avg_sq"], self.param.data
        compiled = self._compiled(rows)
        if compiled is not None and grad.dtype == p.dtype:
            compiled.adamw_step_rows(
                p.numpy(), m.numpy(), v.numpy(), state["row_step"].numpy(), rows.numpy(),
                grad.contiguous().numpy(), t, lr, beta1, beta2, eps, lam,
            )  # fmt: skip
            return
        m_r = m.index_select(0, rows).lerp_(grad, 1 - beta1)
        v_r = v.index_select(0, rows).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = v_r.sqrt().div_(math.sqrt(1 - beta2**t)).add_(eps)
        p_new = p.index_select(0, rows).mul_(1 - lam).addcdiv_(m_r, denom, value=-lr / (1 - beta1**t))
        _write_rows(p, rows, p_new)
        _write_rows(m, rows, m_r)
        _write_rows(v, rows, v_r)
        state["row_step"].index_fill_(0, rows, float(t))


def _write_rows(dst: torch.Tensor, rows: torch.Tensor, src: torch.Tensor) -> None:
    """dst[rows] = src; through numpy on the CPU, where it is 2-3x faster than torch's index_copy_."""
    if dst.device.type == "cpu" and dst.dtype in (torch.float32, torch.float64) and dst.is_contiguous():
        dst.numpy()[rows.numpy()] = src.numpy()
    else:
        dst.index_copy_(0, rows, src)


@functools.lru_cache(maxsize=8)
def _g_table(size: int, beta1: float, beta2: float, lam: float, device: torch.device) -> torch.Tensor:
    """For u = 0 .. size - 1: G(u) = sum_{i>=1} rho^i c(u + i), and sqrt(1 - beta2^u) (float64)."""
    rho = beta1 / math.sqrt(beta2) / (1.0 - lam)
    terms = int(math.ceil(math.log(_TAIL) / math.log(rho)))
    u = np.arange(0, size + terms + 1, dtype=np.float64)
    root = np.sqrt(-np.expm1(u * math.log(beta2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = root / -np.expm1(u * math.log(beta1))  # c(0) is 0/0: never used
    g = np.correlate(c[1:], rho ** np.arange(1, terms + 1), mode="valid")[:size]
    return torch.from_numpy(np.stack([g, root[:size]], 1)).to(device)
