"""`cluster-learngene`: Cluster-Learngene: Inheriting Adaptive Clusters for Vision Transformers
(Wang et al., NeurIPS 2024; code BruceQFWang/NeurIPS24-Cluster-Learngene).

Heads of each ancestry layer are clustered by their mean attention distance (DBSCAN) and
adjacent layers' FFNs by their behaviour; the learngene is the clusters' representative
heads, one FFN per group, and the stem. Descendants of any depth and head count grow by
priority weight-sharing and a learnable FFN transform along the layer axis, folded into a
plain timm ViT. See ``method.py`` for the details and every departure from the reference.
"""

from ...registry import MethodSpec, register_method
from .clustering import cluster_heads, ffn_similarity, group_ffns, mean_attention_distance, patch_distances
from .config import ClusterLearngeneConfig
from .method import (ClusterDescendant, cluster_summary, describe_shapes, expand, expand_trainable, extract, fold,
                     share_heads, source_layers, validate)
from .plot import plot_attention_distances

register_method(MethodSpec(
    name="cluster-learngene", config_cls=ClusterLearngeneConfig, extract=extract, expand=expand,
    summary="cluster each layer's heads by mean attention distance (DBSCAN) and adjacent FFNs by behaviour; "
            "representatives grow any depth and head count (priority weight-sharing, trainable FFN transform)",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
    expand_trainable=expand_trainable, fold=fold, plot=plot_attention_distances,
))

__all__ = ["ClusterDescendant", "ClusterLearngeneConfig", "cluster_heads", "cluster_summary", "expand_trainable",
           "ffn_similarity", "fold", "group_ffns", "mean_attention_distance", "patch_distances",
           "plot_attention_distances", "share_heads", "source_layers"]
