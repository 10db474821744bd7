"""sksemiparam: scikit-learn estimators that give a neural network a memory."""

from ._semiparametric import SemiparametricClassifier

__version__ = "0.1.0.dev0"

__all__ = ["SemiparametricClassifier", "__version__"]
