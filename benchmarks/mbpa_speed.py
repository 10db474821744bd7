"""MbPA prediction throughput: per-query adaptation batched with torch.func vs a per-query Python loop.

MbPAClassifier (keys = pixels, output network 784-100-10, as in the permuted-MNIST setting) is
trained for 2 epochs on 10,000 MNIST training images; then test images are predicted with
adaptation (K = 32 neighbours, 10 steps) by the estimator (all queries adapted in parallel with
``vmap``) and by a straightforward loop that copies the output network for each query and takes
the same steps with ``torch.autograd``. Both use the same retrieved neighbours; their probabilities
and predicted labels are compared.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

K, STEPS, LR, REG, EPSILON = 32, 10, 0.1, 0.1, 1e-3


def _loop_predict(clf, X: torch.Tensor) -> torch.Tensor:
    """The straightforward implementation: one query at a time, a fresh copy of g_theta each."""
    from sksemiparam.nn import memory_kernel_weights

    module = clf.module_
    q = module.embed(X)
    _, ids = clf.index_.query(q, K)
    keys, labels = clf.memory_.keys[ids], clf.memory_.y[ids]
    weights = memory_kernel_weights((q[:, None, :] - keys).square().sum(-1), EPSILON)
    theta0 = [p.detach() for p in module.head.parameters()]
    out = []
    for i in range(X.shape[0]):
        head = copy.deepcopy(module.head)
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
    """Queries per second of both implementations and the largest difference of their outputs."""
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
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    loop = _loop_predict(clf, torch.from_numpy(X_test)).double().numpy()
    loop_s = time.perf_counter() - start
    # float32 steps of rate 0.1 on pixel keys amplify rounding: compare probabilities and labels.
    max_diff = float(np.abs(np.exp(batched) - np.exp(loop)).max())
    same_labels = float(np.mean(batched.argmax(1) == loop.argmax(1)))
    rows = [
        {
            "implementation": "batched (torch.func.vmap)",
            "queries": n_queries,
            "seconds": round(batched_s, 3),
            "queries_per_s": round(n_queries / batched_s, 1),
        },
        {
            "implementation": "per-query loop",
            "queries": n_queries,
            "seconds": round(loop_s, 3),
            "queries_per_s": round(n_queries / loop_s, 1),
        },
    ]
    for r in rows:
        print(f"  {r['implementation']:<28} {r['queries_per_s']:>8.1f} queries/s", flush=True)
    print(f"  largest probability difference: {max_diff:.2e}, same predicted label: {same_labels:.4f}")
    summary = {
        "batched_speedup": round(loop_s / batched_s, 2),
        "batched_queries_per_s": rows[0]["queries_per_s"],
        "loop_queries_per_s": rows[1]["queries_per_s"],
        "max_abs_proba_difference": max_diff,
        "same_label_fraction": same_labels,
        "n_neighbors": K,
        "adapt_steps": STEPS,
    }
    return {"results": rows, "summary": summary}
