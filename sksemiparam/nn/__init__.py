"""Plain torch building blocks shared by the estimators (imports only torch)."""

from .embeddings import ConvEmbedding, MLPEmbedding, PeriodicEmbedding, make_embedding
from .kernels import (
    ScratchPool,
    in_batch_class_estimate,
    inverse_distance_log_weights,
    pairwise_sq_distances,
    soft_neighbor_class_estimate,
)
from .mbpa import MbPANet, adapt_and_predict, memory_kernel_weights, memory_vote
from .meta_neighborhoods import CosineLinear, MetaNeighborhoodsNet, dictionary_attention
from .nngk import KernelVoteNet, gaussian_kernel_log_weights, kernel_vote_log_proba
from .semiparametric import SemiparametricNet

__all__ = [
    "ConvEmbedding",
    "CosineLinear",
    "KernelVoteNet",
    "MLPEmbedding",
    "MbPANet",
    "MetaNeighborhoodsNet",
    "PeriodicEmbedding",
    "ScratchPool",
    "SemiparametricNet",
    "adapt_and_predict",
    "dictionary_attention",
    "gaussian_kernel_log_weights",
    "in_batch_class_estimate",
    "inverse_distance_log_weights",
    "kernel_vote_log_proba",
    "make_embedding",
    "memory_kernel_weights",
    "memory_vote",
    "pairwise_sq_distances",
    "soft_neighbor_class_estimate",
]
