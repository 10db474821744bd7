"""
Meta-Neighborhoods on two spirals: a linear classifier tuned by learned neighbours
==================================================================================

The toy of Figure 1 of the Meta-Neighborhoods paper (Shan & Oliva). Two interleaved spirals need a
very non-linear decision boundary, and the output network here is a single linear layer, far too
weak to draw one. ``MetaNeighborhoodsClassifier`` keeps that layer but, for every query, takes one
gradient step on it first, fitting a dictionary of learned neighbours weighted by how close they
are to the query. So each point gets its own linear classifier. The dictionary entries are trained
with the network. We compare with the same linear network without the inner step, draw both
decision regions, and follow the dictionary keys across epochs: as in the paper, training moves
them out along the spiral arms.
"""

# %%
# Setup
# -----
# ``SKSEMIPARAM_QUICK=1`` shrinks the run for continuous integration. The tensors in this toy are
# tiny (two features, 40 dictionary entries), so each training step is a few milliseconds of work
# and spreading it over several threads only adds synchronisation overhead: with one thread this
# script trained ten times faster on a busy two-core machine than with two.
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LinearSegmentedColormap, ListedColormap
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sksemiparam import MetaNeighborhoodsClassifier

QUICK = os.environ.get("SKSEMIPARAM_QUICK") == "1"
N_TRAIN = 400 if QUICK else 1000
N_EPOCHS = 40 if QUICK else 300
GRID = 80 if QUICK else 160
# One torch thread: with two on a shared CPU this example ran up to 10x slower when it was written,
# and results are only bit-reproducible across runs with a fixed number of threads.
torch.set_num_threads(1)
# The vanilla baseline is fitted for a fixed number of epochs.
warnings.filterwarnings("ignore", category=ConvergenceWarning)


def two_spirals(n, rng, noise=0.02):
    """Two spirals of 1.5 turns around the origin, radius up to 1; class 1 is class 0 turned by pi."""
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    radius = t / (3 * np.pi)
    angle = t + np.pi * label
    X = np.c_[radius * np.cos(angle), radius * np.sin(angle)] + noise * rng.normal(size=(n, 2))
    return X.astype(np.float32), label


rng = np.random.default_rng(0)
X_train, y_train = two_spirals(N_TRAIN, rng)
X_test, y_test = two_spirals(1000, rng)

# %%
# The weak output network, alone
# -------------------------------
# With ``embedding="identity"`` the dictionary keys live in the input plane, where we can draw them,
# and with ``head_layer_sizes=()`` the output network f_phi is one layer: the paper's
# cosine-similarity classifier, logits tau * cos(x, w_c) (its eq. 15). For two classes it predicts
# class 1 where x . (w_1/||w_1|| - w_0/||w_0||) > 0: a linear classifier without intercept, whose
# decision boundary is a straight line through the origin (and whose probabilities depend only on
# the angle of x). ``aux_weight=0`` drops the auxiliary head, which only matters with a learned
# encoder, and ``similarity="euclidean"`` is the attention the paper used for this 2-D toy (its
# eq. 11). The only difference between the two models is ``n_inner_steps``: with 0 no neighbours
# are used and the estimator is just the vanilla linear network.
settings = dict(
    embedding="identity",
    head_layer_sizes=(),
    aux_weight=0.0,
    similarity="euclidean",
    gamma=20.0,
    n_entries=40,
    batch_size=128,
    learning_rate=1e-2,
    random_state=0,
)
vanilla = MetaNeighborhoodsClassifier(n_inner_steps=0, max_epochs=N_EPOCHS, **settings)
vanilla.fit(X_train, y_train)
print(f"vanilla linear network (no neighbours): test accuracy {vanilla.score(X_test, y_test):.3f}")
logreg = LogisticRegression().fit(X_train, y_train)
print(f"for reference, LogisticRegression (with intercept): {logreg.score(X_test, y_test):.3f}")

# %%
# Meta-Neighborhoods, recording the keys after every epoch
# --------------------------------------------------------
# Same settings, one inner step per query. To follow the keys (``module_.keys``, one row per
# dictionary entry) we train one epoch at a time with ``partial_fit`` and copy them after each
# call. ``partial_fit`` keeps the AdamW state between calls, so this loop trains like a single
# ``fit(max_epochs=N_EPOCHS)``: after the loop the optimiser has taken one step per mini-batch
# of every epoch. (``warm_start=True`` with ``max_epochs=1`` and repeated ``fit`` gives exactly
# the same model.) Only the mini-batch shuffles differ from those of a single ``fit``, since each
# call draws its own seed from the estimator's generator.
# The class of entry j is its value's most likely class, ``argmax softmax(module_.values[j])``.
snapshot_epochs = sorted({1, N_EPOCHS // 10, N_EPOCHS})
xx, yy = np.meshgrid(np.linspace(-1.2, 1.2, GRID), np.linspace(-1.2, 1.2, GRID))
grid = np.c_[xx.ravel(), yy.ravel()].astype(np.float32)

mn = MetaNeighborhoodsClassifier(n_inner_steps=1, **settings)
keys = []  # after each epoch: (n_entries, 2)
snapshots = {}  # epoch -> (predicted class on the grid, class of each entry)
start = time.perf_counter()
for epoch in range(1, N_EPOCHS + 1):
    mn.partial_fit(X_train, y_train, classes=[0, 1])
    keys.append(mn.module_.keys.detach().numpy().copy())
    if epoch in snapshot_epochs:
        key_class = mn.module_.values.detach().argmax(1).numpy()
        snapshots[epoch] = (mn.predict(grid).reshape(xx.shape), key_class)
keys = np.array(keys)  # (epochs, n_entries, 2)
fit_time = time.perf_counter() - start
print(
    f"Meta-Neighborhoods (the same network, one inner step): test accuracy "
    f"{mn.score(X_test, y_test):.3f}, {mn.n_iter_} epochs in {fit_time:.1f} s"
)
moved = np.linalg.norm(keys[-1] - keys[0], axis=1)
central = int((np.linalg.norm(keys[-1], axis=1) < 0.25).sum())
print(
    f"keys moved by {np.median(moved):.2f} (median) and up to {moved.max():.2f} between epoch 1 and "
    f"{N_EPOCHS}; {central} of {len(moved)} ended within 0.25 of the origin"
)
print(f"learned inner step size alpha = {mn.module_.inner_lr.item():.2f} (started at 0.1)")

# %%
# Decision regions
# ----------------
# Left, the vanilla linear network: a single line through the origin, wrong on about a third of
# the test points. Right, the same network tuned per query by the learned neighbours, drawn as
# diamonds coloured by their class: each query's one-step fit follows the arms.
colors = ListedColormap(["tab:blue", "tab:orange"])
blue_orange = LinearSegmentedColormap.from_list("blue_orange", ["tab:blue", "white", "tab:orange"])
fig, axes = plt.subplots(1, 2, figsize=(11, 5.3), constrained_layout=True)
for ax, model, name in ((axes[0], vanilla, "vanilla linear network"), (axes[1], mn, "Meta-Neighborhoods")):
    proba = model.predict_proba(grid)[:, 1].reshape(xx.shape)
    ax.contourf(xx, yy, proba, levels=np.linspace(0, 1, 11), cmap=blue_orange, alpha=0.6)
    ax.scatter(X_test[:, 0], X_test[:, 1], c=y_test, cmap=colors, s=4)
    ax.set_title(f"{name}: test accuracy {model.score(X_test, y_test):.3f}")
    ax.set_aspect("equal")
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
axes[1].scatter(*keys[-1].T, c=snapshots[N_EPOCHS][1], cmap=colors, marker="D", s=40, edgecolor="k")
fig.colorbar(axes[0].collections[0], ax=axes, label="predicted P(class 1)", shrink=0.8)
plt.show()

# %%
# The keys during training (the paper's Figure 1)
# -----------------------------------------------
# Background: the predicted class after the given epoch. Lines: the path of every key up to that
# epoch (its position every few epochs), from where it was after the first epoch (grey dot) to
# where it is now (diamond, coloured by the entry's class). The keys start as a small cloud around
# the origin (the library initialises them from N(0, 0.1^2), the paper's initialisation). Within
# the first tens of epochs training pulls some of them out onto the arms, mostly onto the arm of
# their own class, where they bend the linear classifier of the queries around them; later they
# mostly slide along the arms. About half stay near the centre, where the arms start close
# together and the boundary turns fastest. The zig-zags come from AdamW, which scales every key's
# step to about the learning rate, even for keys whose gradient is small and noisy.
fig, axes = plt.subplots(
    1, len(snapshot_epochs), figsize=(5 * len(snapshot_epochs), 5.2), constrained_layout=True
)
for ax, epoch in zip(axes, snapshot_epochs):
    predicted, key_class = snapshots[epoch]
    ax.contourf(xx, yy, predicted, levels=[-0.5, 0.5, 1.5], colors=["tab:blue", "tab:orange"], alpha=0.25)
    ax.scatter(X_train[:, 0], X_train[:, 1], c=y_train, cmap=colors, s=3, alpha=0.5)
    # One point every few epochs: the drift, without the epoch-to-epoch jitter of the optimiser.
    path = np.concatenate([keys[: epoch - 1 : max(1, N_EPOCHS // 30)], keys[epoch - 1 : epoch]])
    for j in range(path.shape[1]):
        ax.plot(path[:, j, 0], path[:, j, 1], "-", color="k", lw=0.7, alpha=0.6)
    ax.scatter(*path[0].T, color="grey", s=8, zorder=3)
    ax.scatter(*path[-1].T, c=key_class, cmap=colors, marker="D", s=40, edgecolor="k", zorder=4)
    ax.set_title(f"after epoch {epoch}")
    ax.set_aspect("equal")
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
fig.suptitle("Learned dictionary keys and their trajectories during training")
plt.show()

# %%
# A single linear layer cannot separate the spirals; tuned per query on a few dozen learned
# neighbours it can. Which neighbours to learn is itself learned: the dictionary is trained end
# to end through the inner step, so its keys gather where the decision boundary needs them.
