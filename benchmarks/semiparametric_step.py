"""Training-step cost of SemiparametricClassifier's in-batch neighbour estimate, against the parametric step.

One optimisation step (forward, backward, AdamW) of the paper's MNIST network (784 -> 32 -> 32 ->
head) on MNIST-shaped batches, for the three modes of ``SemiparametricNet``, plus the same
semiparametric model with the neighbour estimate computed by plain autograd (the generic
``soft_neighbor_class_estimate``), at batch sizes 100 and 1000 (the paper's MNIST and CIFAR
batches). Inputs are uniform noise: the cost of a step does not depend on the pixel values.
Reported as ratios to the parametric step, measured in the same run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BATCH_SIZES = [100, 1000]
N_FEATURES, N_CLASSES = 784, 10


def _net(mode: str, generic: bool = False):
    from sksemiparam.nn import (
        MLPEmbedding,
        SemiparametricNet,
        pairwise_sq_distances,
        soft_neighbor_class_estimate,
    )

    net = SemiparametricNet(
        embedding=MLPEmbedding(in_features=N_FEATURES, hidden_layer_sizes=(32,), embedding_dim=32),
        embedding_dim=32,
        n_classes=N_CLASSES,
        mode=mode,
    )
    if generic:  # autograd through the plain formula, for comparison

        def in_batch_estimate(v, y):
            mask = ~torch.eye(v.shape[0], dtype=torch.bool)
            return soft_neighbor_class_estimate(pairwise_sq_distances(v, v), y, N_CLASSES, net.tau, mask)

        net.in_batch_estimate = in_batch_estimate
    return net


def _median_step_seconds(net, batch_size: int, steps: int, rng: torch.Generator) -> float:
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    X = torch.rand(20_000, N_FEATURES, generator=rng)
    y = torch.randint(0, N_CLASSES, (20_000,), generator=rng)
    times = []
    for _ in range(steps):
        ids = torch.randint(0, X.shape[0], (batch_size,), generator=rng)
        xb, yb = X[ids], y[ids]
        start = time.perf_counter()
        loss = F.nll_loss(net(xb, yb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[steps // 10 :]))  # the first steps warm up the allocator


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Median step time per (batch size, variant); ``data_dir`` is unused (synthetic batches)."""
    steps = 60 if quick else 300
    variants = [
        ("parametric", "parametric", False),
        ("semiparametric", "semiparametric", False),
        ("nonparametric", "nonparametric", False),
        ("semiparametric_autograd", "semiparametric", True),
    ]
    rows, summary = [], {}
    for batch_size in BATCH_SIZES:
        seconds = {}
        for name, mode, generic in variants:
            rng = torch.Generator().manual_seed(0)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                net = _net(mode, generic)
            seconds[name] = _median_step_seconds(net, batch_size, steps, rng)
        for name, s in seconds.items():
            ratio = s / seconds["parametric"]
            rows.append(
                {
                    "batch_size": batch_size,
                    "variant": name,
                    "step_ms": round(s * 1e3, 3),
                    "ratio": round(ratio, 2),
                }
            )
            print(f"  B={batch_size:<5} {name:<24} {s * 1e3:8.3f} ms  {ratio:5.2f}x parametric", flush=True)
            if name != "parametric":
                summary[f"{name}.ratio_b{batch_size}"] = round(ratio, 2)
    return {"results": rows, "summary": summary}
