"""sksemiparam: scikit-learn estimators that give a neural network a memory."""

from ._impostor import ImpostorClassifier
from ._mbpa import MbPAClassifier
from ._meta_neighborhoods import MetaNeighborhoodsClassifier, MetaNeighborhoodsRegressor
from ._nngk import NNGKClassifier
from ._semiparametric import SemiparametricClassifier

__version__ = "0.2.0.dev0"

__all__ = [
    "ImpostorClassifier",
    "MbPAClassifier",
    "MetaNeighborhoodsClassifier",
    "MetaNeighborhoodsRegressor",
    "NNGKClassifier",
    "SemiparametricClassifier",
    "__version__",
]
