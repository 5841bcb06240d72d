"""Kronecker-product weight construction: a matrix as a weighted concatenation of templates.

A weight matrix W [a*m, b*m] is built from N templates T [N, m, m] (shared by every layer and
every model size) and one layer's weight scalers S [N, a, b] (size-specific):

    W = sum_n S[n] (x) T[n]          i.e.  W[i*m + r, j*m + c] = sum_n S[n, i, j] * T[n, r, c]

so block (i, j) of W is the templates weighted by the scalers at (i, j): a model of any width that
is a multiple of m is a grid of template blocks, its size set by the scalers' shape alone.
"""

from __future__ import annotations

import torch

from ...errors import ConfigError
from .._indices import uniform_indices


def compose(scalers: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """sum_n scalers[n] (x) templates[n]: [N, a, b] and [N, m, m'] -> [a*m, b*m'] (differentiable)."""
    n, a, b = scalers.shape
    _, m, k = templates.shape
    return torch.einsum("nab,nrc->arbc", scalers, templates).reshape(a * m, b * k)


def blocks_of(matrix: torch.Tensor, m: int) -> torch.Tensor:
    """The m x m blocks of ``matrix`` [a*m, b*m] as rows: [a*b, m*m] (row i*b + j = block (i, j))."""
    rows, cols = matrix.shape
    a, b = rows // m, cols // m
    return matrix.reshape(a, m, b, m).permute(0, 2, 1, 3).reshape(a * b, m * m)


def nearest_kronecker_sum(matrices: list[torch.Tensor], m: int, n: int,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Templates [n, m, m] and one scaler set [n, a_l, b_l] per matrix whose Kronecker sums are the
    best approximation of ``matrices`` (sum of squared errors) with templates shared by all of them.

    Van Loan and Pitsianis' nearest Kronecker product, shared: every matrix's m x m blocks, as
    rows, are stacked into one [sum_l a_l*b_l, m*m] matrix whose truncated SVD U diag(s) V^T gives
    templates sqrt(s_k) V_k and scalers sqrt(s_k) U_k. Where n exceeds the rank the extra
    templates are tiny random ones (``generator``), so they can still learn.
    """
    rows = [blocks_of(w.detach().float(), m) for w in matrices]
    u, s, vh = torch.linalg.svd(torch.cat(rows), full_matrices=False)  # [R, r], [r], [r, m*m]
    r = min(n, s.numel())
    root = s[:r].sqrt()
    templates = torch.zeros(n, m * m)
    templates[:r] = root[:, None] * vh[:r]
    coefficients = torch.zeros(u.shape[0], n)
    coefficients[:, :r] = u[:, :r] * root
    if r < n:
        templates[r:] = 1e-3 * torch.randn(n - r, m * m, generator=generator)
    scalers, start = [], 0
    for w, block_rows in zip(matrices, rows):
        a, b = w.shape[0] // m, w.shape[1] // m
        scalers.append(coefficients[start:start + a * b].T.reshape(n, a, b).contiguous())
        start += a * b
    return templates.reshape(n, m, m), scalers


def spread(n_source: int, n_target: int) -> torch.Tensor:
    """Which of ``n_source`` layers each of ``n_target`` layers starts from: evenly spaced
    (weight selection's ``uniform_indices``) when shallower, each source layer repeated in order
    (floor(j * n_source / n_target)) when deeper."""
    if n_target <= n_source:
        return uniform_indices(n_source, n_target)
    return torch.arange(n_target) * n_source // n_target


def block_channels(blocks: torch.Tensor, m: int) -> torch.Tensor:
    """The channel indices of whole m-wide blocks: blocks [k] -> [k*m] (block b = b*m .. b*m + m-1)."""
    return (blocks[:, None] * m + torch.arange(m)).reshape(-1)


def check_multiple(name: str, value: int, m: int) -> None:
    if value % m:
        raise ConfigError(f"wave builds weights from {m}x{m} templates, so the {name} must be a multiple of {m}, "
                          f"got {value}; choose {name} in {[m * k for k in range(1, 7)]}..., or extract with "
                          f"another template_size")
