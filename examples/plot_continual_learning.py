"""
Continual learning with partial_fit: the accuracy matrix
========================================================

A continual learner sees tasks one after the other and never goes back to an earlier one. Here
scikit-learn's digits arrive as five tasks of two classes each (``{0, 1}``, then ``{2, 3}``, ...,
the "split MNIST" protocol), learned with ``partial_fit``. :mod:`sksemiparam.continual` builds the
stream, trains a model through it and records the accuracy matrix ``R``: ``R[i, j]`` is the
accuracy on task ``j`` after training task ``i``.

A plain network learns each task and forgets it as soon as the next one is trained (catastrophic
forgetting). :class:`~sksemiparam.ImpostorClassifier` classifies by a vote of its nearest stored
training examples (centres), so the examples of the old tasks keep voting for their classes after
the network has moved on. :class:`~sksemiparam.MbPAClassifier` with a memory far smaller than the
stream keeps the old tasks only when the memory keeps their examples (``memory_policy``). Elastic
weight consolidation (``ewc_lambda``), which protects the weights that mattered for earlier tasks,
is swept at the end: in this class-incremental setting it cannot keep the old classes without also
blocking the new ones.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sksemiparam import ImpostorClassifier, MbPAClassifier, SemiparametricClassifier
from sksemiparam.continual import evaluate_stream, plot_accuracy_matrix, split_tasks

# Quick mode (SKSEMIPARAM_QUICK=1, used by CI): fewer passes per task and fewer EWC strengths.
QUICK = os.environ.get("SKSEMIPARAM_QUICK") == "1"
EPOCHS = 3 if QUICK else 10
EWC_LAMBDAS = [0.0, 1e4, 1e8] if QUICK else [0.0, 1e2, 1e4, 1e6, 1e8, 1e10]


# %%
# The task stream
# ---------------
# ``split_tasks`` cuts the training and test sets by class. Labels keep their values, so the model
# always predicts among all ten digits: forgetting shows as old digits being predicted as new ones.

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16, y, stratify=y, random_state=0)
tasks = split_tasks(X_train, y_train, X_test, y_test, n_tasks=5)
for task in tasks:
    print(task)

# %%
# A plain network and an Impostor Network through the stream
# ----------------------------------------------------------
# Both use the same embedding network (64 pixels -> 128 hidden units -> 64) and optimiser settings.
# ``SemiparametricClassifier`` in ``"parametric"`` mode is a plain network with a softmax output
# and no memory. ``ImpostorClassifier`` replaces the softmax by a Gaussian-kernel vote over the
# stored centres. Its first ``partial_fit`` stores every row as a centre; by default every later
# call would too, storing each example again on every pass. ``n_add=27`` (a tenth of a task)
# instead adds, per call, the 27 new examples the model predicts worst (Algorithm 1 of
# Chervontsev's review), and ``finetune_epochs=0`` skips that algorithm's extra fine-tuning pass,
# so both models train one pass per call.
#
# ``evaluate_stream`` makes ``EPOCHS`` passes over each task, each pass one ``partial_fit`` call
# (the estimator's own ``max_epochs`` plays no part), then scores the model on every task's test
# set.

network = {"hidden_layer_sizes": (128,), "embedding_dim": 64, "batch_size": 32, "random_state": 0}
models = {
    "plain network": SemiparametricClassifier("parametric", **network),
    "ImpostorClassifier": ImpostorClassifier(n_add=27, finetune_epochs=0, **network),
}
results = {}
for name, model in models.items():
    results[name] = evaluate_stream(model, tasks, epochs=EPOCHS, random_state=0)
    result = results[name]
    print(f"\n{name}: training took {result.fit_seconds:.1f} s")
    print("R (rows: after training task i; columns: accuracy on task j) =")
    print(result.accuracy.round(2))
    print(
        f"average accuracy {result.average_accuracy:.3f}, backward transfer {result.backward_transfer:+.3f}"
    )
n_centres = len(models["ImpostorClassifier"].centers_y_)
print(f"\nthe Impostor Network ends with {n_centres} stored centres for {len(X_train)} training images")

# %%
# The accuracy matrices
# ---------------------
# The diagonal is what each task scored just after it was learned, the cells below it what was kept
# later on. The plain network's lower triangle is dark: each task is forgotten as soon as the next
# one is trained, and at the end it predicts only the last two digits. The Impostor Network keeps
# almost everything. The titles give the average accuracy after the last task (``ACC``, the mean
# of the last row) and the backward transfer (``BWT``, the mean change from the diagonal to the last
# row; negative is forgetting).

fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
for ax, (name, result) in zip(axes, results.items()):
    plot_accuracy_matrix(
        result,
        ax=ax,
        title=f"{name}\nACC {result.average_accuracy:.3f}, BWT {result.backward_transfer:+.3f}",
    )
fig.suptitle(f"Split digits, 5 tasks of 2 classes, {EPOCHS} passes per task")

# %%
# A bounded memory: which examples it keeps
# -----------------------------------------
# :class:`~sksemiparam.MbPAClassifier` writes every training example to an episodic memory and, at
# prediction, adapts its output network to each query's nearest entries. With ``memory_size``
# smaller than the stream, what the memory keeps decides what the model remembers. The default
# (``memory_policy="fifo"``) keeps the newest entries: at the end only the last task's digits.
# ``memory_policy="class_balanced"`` keeps about equal shares of every class seen. Here the memory
# holds 135 entries, a tenth of the training images, and its keys are the pixels
# (``embedding="identity"``), so they do not go stale as the network learns.

memories = {}
for policy in ("fifo", "class_balanced"):
    model = MbPAClassifier(
        embedding="identity", head_layer_sizes=(128,), memory_size=135, memory_policy=policy,
        batch_size=32, random_state=0,
    )  # fmt: skip
    memories[policy] = evaluate_stream(model, tasks, epochs=EPOCHS, random_state=0)
    held = np.bincount(model.classes_[model.memory_.y.numpy()], minlength=10)
    print(
        f"memory_policy={policy!r}: ACC {memories[policy].average_accuracy:.3f}, "
        f"BWT {memories[policy].backward_transfer:+.3f}; entries per digit at the end: {held.tolist()}"
    )

fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
for ax, (policy, result) in zip(axes, memories.items()):
    plot_accuracy_matrix(
        result,
        ax=ax,
        title=f"MbPA, memory_policy={policy!r}\nACC {result.average_accuracy:.3f}, "
        f"BWT {result.backward_transfer:+.3f}",
    )

# %%
# Elastic weight consolidation on the plain network
# -------------------------------------------------
# With ``ewc_lambda`` > 0, ``end_task`` (called by ``evaluate_stream`` after each task) records how
# much each weight mattered for the task just learned, and later training is penalised for moving
# those weights. Sweeping its strength shows the trade-off: forgetting (BWT) only shrinks once the
# penalty is strong enough to stop the network from learning the new tasks (the mean of the
# diagonal), and the final average accuracy never approaches the Impostor Network's.

acc, bwt, learned = [], [], []
for ewc_lambda in EWC_LAMBDAS:
    model = SemiparametricClassifier("parametric", ewc_lambda=ewc_lambda, **network)
    result = evaluate_stream(model, tasks, epochs=EPOCHS, random_state=0)
    acc.append(result.average_accuracy)
    bwt.append(result.backward_transfer)
    learned.append(np.diag(result.accuracy).mean())
    print(
        f"ewc_lambda={ewc_lambda:<8g} ACC {acc[-1]:.3f}  BWT {bwt[-1]:+.3f}  "
        f"mean accuracy just after learning a task {learned[-1]:.3f}"
    )

fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
# A log axis cannot show 0: plot ewc_lambda=0 two decades left of the smallest positive strength.
positive = [lam for lam in EWC_LAMBDAS if lam > 0]
x = [lam if lam > 0 else min(positive) / 100 for lam in EWC_LAMBDAS]
ax.plot(x, learned, marker="o", label="accuracy just after learning a task (mean of diagonal)")
ax.plot(x, acc, marker="o", label="ACC: average accuracy after the last task")
ax.plot(x, bwt, marker="o", label="BWT: backward transfer")
ax.axhline(
    results["ImpostorClassifier"].average_accuracy,
    color="black",
    linestyle="--",
    label="ACC of the ImpostorClassifier (no EWC)",
)
ax.axhline(0.0, color="0.6", linewidth=0.8)
ax.set_xscale("log")
ax.tick_params(axis="x", which="minor", bottom=False)
ax.set_xticks(x, ["0"] + [f"{lam:.0e}".replace("e+0", "e").replace("e+", "e") for lam in positive])
ax.set_xlabel("ewc_lambda of the plain network")
ax.set_ylim(-1.05, 1.1)
ax.set_ylabel("accuracy, or change of accuracy (BWT)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize=8)
ax.set_title("EWC in class-incremental learning: stability or plasticity, not both")

plt.show()
