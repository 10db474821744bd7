"""MbPA prediction throughput: the estimator's batched per-query adaptation vs a per-query Python loop.

MbPAClassifier (keys = pixels, output network 784-100-10, as in the permuted-MNIST setting) is
trained for 2 epochs on 10,000 MNIST training images; then test images are predicted with
adaptation (K = 32 neighbours, 10 steps) by the estimator (all queries adapted together, the
steps in closed form with the first layer's update in the span of the neighbours' keys) and by a
straightforward loop that copies the output network for each query and takes the same steps with
``torch.autograd``. Both use the same retrieved neighbours and kernel weights.

The loop runs twice: in float32, the parameters' precision (its time is the baseline of
``batched_speedup``), and in float64, the precision the estimator's prediction computes in on the
CPU, whose outputs are the reference of ``max_abs_proba_difference`` and ``same_label_fraction``
(float32 steps of rate 0.1 on pixel keys amplify rounding to ~1e-4: those differences are given
too, with the suffix ``_float32_loop``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

K, STEPS, LR, REG, EPSILON = 32, 10, 0.1, 0.1, 1e-3


def _loop_predict(clf, X: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The straightforward implementation: one query at a time, a fresh copy of g_theta each, its
    steps in ``dtype`` (the neighbours and their weights found as the estimator finds them)."""
    from sksemiparam.nn import memory_kernel_weights

    module = clf.module_
    q = module.embed(X)
    _, ids = clf.index_.query(q, K)
    keys, labels = clf.memory_.keys[ids], clf.memory_.y[ids]
    weights = memory_kernel_weights((q[:, None, :] - keys).square().sum(-1), EPSILON)
    q, keys, weights = q.to(dtype), keys.to(dtype), weights.to(dtype)
    head0 = copy.deepcopy(module.head).to(dtype)
    theta0 = [p.detach() for p in head0.parameters()]
    out = []
    for i in range(X.shape[0]):
        head = copy.deepcopy(head0)
        params = list(head.parameters())
        for _ in range(STEPS):
            log_p = torch.log_softmax(head(keys[i]), dim=1)
            loss = -(weights[i] * log_p[torch.arange(K), labels[i]]).sum()
            loss = loss + REG * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta0))
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= LR * g
        with torch.no_grad():
            out.append(torch.log_softmax(head(q[i : i + 1]), dim=1)[0])
    return torch.stack(out)


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Queries per second of the estimator and of the two loops, and the differences of their outputs."""
    from sksemiparam import MbPAClassifier
    from sksemiparam.datasets import load_mnist

    X_train, y_train = load_mnist(data_dir, subset="train")
    X_test, _ = load_mnist(data_dir, subset="test")
    X_train, y_train = (X_train[:10_000] / 255.0).astype(np.float32), y_train[:10_000]
    n_queries = 100 if quick else 1000
    X_test = (X_test[:n_queries] / 255.0).astype(np.float32)

    clf = MbPAClassifier(
        embedding="identity",
        head_layer_sizes=(100,),
        n_neighbors=K,
        adapt_steps=STEPS,
        adapt_lr=LR,
        adapt_reg=REG,
        kernel_epsilon=EPSILON,
        max_epochs=2,
        index="exact",
        device="cpu",
        random_state=0,
    ).fit(X_train, y_train)

    start = time.perf_counter()
    batched = clf.predict_log_proba(X_test)
    seconds = {"batched": time.perf_counter() - start}
    loops = {}
    for name, dtype in (("loop", torch.float32), ("loop_float64", torch.float64)):
        start = time.perf_counter()
        loops[name] = _loop_predict(clf, torch.from_numpy(X_test), dtype).double().numpy()
        seconds[name] = time.perf_counter() - start
    names = {
        "batched": "batched (closed-form steps)",
        "loop": "per-query loop",
        "loop_float64": "per-query loop (float64)",
    }
    rows = [
        {
            "implementation": names[key],
            "queries": n_queries,
            "seconds": round(seconds[key], 3),
            "queries_per_s": round(n_queries / seconds[key], 1),
        }
        for key in names
    ]
    for r in rows:
        print(f"  {r['implementation']:<28} {r['queries_per_s']:>8.1f} queries/s", flush=True)
    summary = {
        "batched_speedup": round(seconds["loop"] / seconds["batched"], 2),
        "batched_speedup_vs_float64_loop": round(seconds["loop_float64"] / seconds["batched"], 2),
        "batched_queries_per_s": rows[0]["queries_per_s"],
        "loop_queries_per_s": rows[1]["queries_per_s"],
        "loop_float64_queries_per_s": rows[2]["queries_per_s"],
    }
    for suffix, loop in (("", loops["loop_float64"]), ("_float32_loop", loops["loop"])):
        summary["max_abs_proba_difference" + suffix] = float(np.abs(np.exp(batched) - np.exp(loop)).max())
        summary["same_label_fraction" + suffix] = float(np.mean(batched.argmax(1) == loop.argmax(1)))
    print(
        f"  largest probability difference: {summary['max_abs_proba_difference']:.2e} "
        f"({summary['max_abs_proba_difference_float32_loop']:.2e} to the float32 loop), "
        f"same predicted label: {summary['same_label_fraction']:.4f}"
    )
    summary.update({"n_neighbors": K, "adapt_steps": STEPS})
    return {"results": rows, "summary": summary}
