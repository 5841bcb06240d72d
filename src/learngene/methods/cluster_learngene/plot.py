"""The paper's Fig. 1/3 view: mean attention distance of every head against depth, with
each layer's clusters coloured (by priority rank) and the representatives outlined."""

from __future__ import annotations

import os
from pathlib import Path

from ..._io import atomic_write
from ...artifact import Artifact
from ...errors import ConfigError


def plot_attention_distances(gene: Artifact, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write a PNG (atomically) of the learngene's measured mean attention distances per head
    and layer, coloured by cluster; returns the path."""
    if gene.method != "cluster-learngene":
        raise ConfigError(f"only cluster-learngene learngenes hold attention distances to plot; this one is "
                          f"{gene.method!r}")
    distances, clusters = gene.config.get("distances"), gene.config.get("head_clusters")
    if distances is None or clusters is None:
        raise ConfigError("this learngene's config holds no distances or head_clusters; re-extract it")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(distances) + 2), 4.5))
    ranks_used = set()
    for layer, layer_clusters in enumerate(clusters):
        clustered = {h for members in layer_clusters for h in members}
        for rank, members in enumerate(layer_clusters):
            ys = [distances[layer][h] for h in members]
            label = f"priority {rank + 1} cluster" if rank not in ranks_used else None
            ranks_used.add(rank)
            ax.scatter([layer] * len(members), ys, s=60, color=colours[rank % len(colours)], alpha=0.8, label=label,
                       edgecolors="none")
            ax.scatter([layer], ys[:1], s=140, facecolors="none", edgecolors="black", linewidths=1.2)  # representative
        noise = [h for h in range(len(distances[layer])) if h not in clustered]
        if noise:
            ax.scatter([layer] * len(noise), [distances[layer][h] for h in noise], marker="x", color="grey",
                       label="noise (dropped)" if "noise" not in ranks_used else None)
            ranks_used.add("noise")
    ax.scatter([], [], s=140, facecolors="none", edgecolors="black", label="representative")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(range(len(distances)))
    ax.set_title(f"Cluster-Learngene heads (eps {gene.config.get('eps')} px, "
                 f"min_samples {gene.config.get('min_samples')})")
    ax.grid(alpha=0.3, linestyle="--")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
