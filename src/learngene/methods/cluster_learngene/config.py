from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError

PLACEMENTS = ("spread", "first")
HEAD_GROUPINGS = ("attention-distance", "random")
OUTPUTS = ("distances", "head_clusters", "ffn_groups", "ffn_kept", "ffn_similarity")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int_lists(value, name: str, depth: int) -> None:
    """``value`` must be a list of lists (nested ``depth`` levels) of integers >= 0."""
    if depth == 0:
        if not _is_int(value) or value < 0:
            raise ConfigError(f"cluster-learngene {name} must hold indices >= 0, got {value!r}")
        return
    if not isinstance(value, list) or not value:
        raise ConfigError(f"cluster-learngene {name} must be a non-empty list (of lists) of indices, got {value!r}")
    for item in value:
        _int_lists(item, name, depth - 1)


@dataclass
class ClusterLearngeneConfig:
    """How Cluster-Learngene clusters the ancestry's heads and FFNs (Wang et al., NeurIPS 2024).

    Heads: each head's mean attention distance (pixels) is measured on ``sample_size``
    images of the data, then DBSCAN (``eps`` pixels, ``min_samples``) clusters the heads of
    each layer; the head nearest each cluster's centroid represents it, and the clusters are
    ordered by size (the priority). The paper's code uses eps 10 and min_samples 1 at
    224 px / patch 16; on a small grid (vit-mini: 28 px / patch 7, distances of 0-15 px)
    a smaller eps such as 1-2 px is the comparable radius.

    FFNs: adjacent layers whose FFNs behave alike on the sample (cosine similarity of their
    outputs on the same inputs >= ``ffn_threshold`` for every pair) form one group; one FFN
    per group is kept (``ffn_threshold`` above 1 keeps every FFN).

    ``placement`` and ``share_noise`` act when descendants are grown (they are stored with
    the learngene).

    Fields after ``device`` are outputs: extraction fills them in and the saved config keeps
    them; they cannot be set by hand.
    """

    sample_size: int = 1000        # images of `data` the distances are measured on (paper: 1,000 ImageNet images)
    eps: float = 10.0              # DBSCAN radius in pixels of mean attention distance (reference code: 10)
    min_samples: int = 1           # DBSCAN min_samples (reference: 1, so no head is noise); noise heads are dropped
    ffn_threshold: float = 0.6     # a layer joins the group above when its FFN's output cosine similarity to
    #                                every member's is >= this (ours; the paper gives no number; > 1 keeps all)
    head_grouping: str = "attention-distance"  # "random": a control (ours, not the paper's): DBSCAN's cluster
    #                                sizes kept, the heads assigned to them at random (seeded by `seed`)
    ffn_tokens: int = 4096         # tokens per layer on which FFN behaviour is compared (bounds the cost)
    placement: str = "spread"      # descendant layer j reads ancestry layer at relative depth ("spread") or j ("first")
    share_noise: float = 0.01      # descendant heads sharing a representative (all but its first copy) get
    #                                q/k/v noise of this std relative to the representative's, to break symmetry
    keep_head: bool = False        # also store the classifier (used only when the descendant's labels match)
    batch_size: int = 100          # images per forward while measuring
    seed: int = 0                  # which images and tokens are sampled
    device: str = "auto"           # where the ancestry runs while measuring: "auto", "cpu", "cuda:0", ...
    distances: list[list[float]] | None = None          # output: [layer][head] mean attention distance (px)
    head_clusters: list[list[list[int]]] | None = None  # output: [layer][cluster, priority order] member heads,
    #                                                     representative first
    ffn_groups: list[list[int]] | None = None           # output: groups of adjacent layers sharing one FFN
    ffn_kept: list[int] | None = None                   # output: the layer whose FFN each group keeps
    ffn_similarity: list[list[float]] | None = None     # output: [layer][layer] FFN behaviour similarity

    def __post_init__(self) -> None:
        for name, minimum in (("sample_size", 1), ("min_samples", 1), ("ffn_tokens", 1), ("batch_size", 1),
                              ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise ConfigError(f"cluster-learngene {name} must be an integer >= {minimum}, got {value!r}")
        if not _is_num(self.eps) or self.eps <= 0:
            raise ConfigError(f"cluster-learngene eps must be a number of pixels > 0 (the paper's code: 10), "
                              f"got {self.eps!r}")
        if not _is_num(self.ffn_threshold) or not -1 <= self.ffn_threshold:
            raise ConfigError(f"cluster-learngene ffn_threshold must be a number >= -1 (a cosine similarity; "
                              f"above 1 keeps every FFN), got {self.ffn_threshold!r}")
        if not _is_num(self.share_noise) or self.share_noise < 0:
            raise ConfigError(f"cluster-learngene share_noise must be a number >= 0, got {self.share_noise!r}")
        if self.head_grouping not in HEAD_GROUPINGS:
            raise ConfigError(f"cluster-learngene head_grouping must be one of {', '.join(HEAD_GROUPINGS)}, "
                              f"got {self.head_grouping!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"cluster-learngene placement must be one of {', '.join(PLACEMENTS)}, "
                              f"got {self.placement!r}")
        if not isinstance(self.keep_head, bool):
            raise ConfigError(f"cluster-learngene keep_head must be true or false, got {self.keep_head!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"cluster-learngene device must be 'auto' or a torch device such as 'cpu', "
                              f"got {self.device!r}")
        for name in ("eps", "ffn_threshold", "share_noise"):
            setattr(self, name, float(getattr(self, name)))  # JSON/YAML ints -> floats
        self._check_outputs()

    def _check_outputs(self) -> None:
        """Outputs read back from a file: the right nesting and types (consistency is the method's check)."""
        if self.head_clusters is not None:
            _int_lists(self.head_clusters, "head_clusters", 3)
        if self.ffn_groups is not None:
            _int_lists(self.ffn_groups, "ffn_groups", 2)
        if self.ffn_kept is not None:
            _int_lists(self.ffn_kept, "ffn_kept", 1)
        for name in ("distances", "ffn_similarity"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(row, list) and all(_is_num(x) for x in row)
                                                      for row in value):
                raise ConfigError(f"cluster-learngene {name} must be a list of lists of numbers, got {value!r}")
            setattr(self, name, [[float(x) for x in row] for row in value])

    @property
    def has_outputs(self) -> bool:
        return any(getattr(self, name) is not None for name in OUTPUTS)
