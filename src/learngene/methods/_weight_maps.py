"""Small MLPs that map weights along one axis: PEG's layer and head maps, Cluster-Learngene's
FFN layer transforms.

A map is ``Linear(n_in -> h) -> ReLU -> Linear(h -> n_out)`` (``mlp_map``) applied to every
vector of a weight tensor along one axis (``along``), so an axis of n_in layers or heads
becomes n_out. Forms: ``"split"`` (hidden width 2 n_out; ``set_split`` makes it compute a
given linear map ``M x`` exactly, as relu(Mx) - relu(-Mx) = Mx) and ``"paper"`` (hidden
width n_out, PyTorch's default Linear init). The maps run as matrix products over chunks of
elements, with and without autograd alike, so a trainable descendant and its fold compute
the same numbers bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp_map(n_in: int, n_out: int, form: str) -> nn.Sequential:
    """Linear(n_in -> h) -> ReLU -> Linear(h -> n_out); h = 2 n_out ("split") or n_out ("paper")."""
    hidden = 2 * n_out if form == "split" else n_out
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def set_split(seq: nn.Sequential, matrix: torch.Tensor) -> None:
    """Make a "split" map compute exactly ``matrix @ x``: relu(Mx) - relu(-Mx) = Mx."""
    n_out = matrix.shape[0]
    eye = torch.eye(n_out)
    with torch.no_grad():
        seq[0].weight.copy_(torch.cat([matrix, -matrix]))
        seq[0].bias.zero_()
        seq[2].weight.copy_(torch.cat([eye, -eye], dim=1))
        seq[2].bias.zero_()


# Elements per chunk of a map (see ``along``): the hidden activations of a chunk take
# [hidden, 32768] floats (a few MB) instead of [hidden, every element], which at DeiT-B
# would be twice the model.
FOLD_CHUNK = 1 << 15


def _mlp_columns(seq: nn.Sequential, cols: torch.Tensor, hidden: torch.Tensor | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``seq`` (Linear -> ReLU -> Linear) applied to every column of ``cols`` [n_in, N] -> [n_out, N].

    ``hidden`` [h, N] and ``out`` [n_out, N]: buffers to write into (no autograd only), so that
    a loop over chunks allocates nothing.
    """
    first, last = seq[0], seq[2]
    if hidden is None:
        h = torch.relu(first.weight @ cols if first.bias is None else torch.addmm(first.bias[:, None], first.weight, cols))
        return last.weight @ h if last.bias is None else torch.addmm(last.bias[:, None], last.weight, h)
    if first.bias is None:
        torch.mm(first.weight, cols, out=hidden)
    else:
        torch.addmm(first.bias[:, None], first.weight, cols, out=hidden)
    hidden.relu_()
    if last.bias is None:
        return torch.mm(last.weight, hidden, out=out)
    return torch.addmm(last.bias[:, None], last.weight, hidden, out=out)


def _tracked(seq: nn.Sequential, x: torch.Tensor) -> bool:
    """Will autograd record the map applied to ``x``?"""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in seq.parameters()))


def _chunks(seq: nn.Sequential, cols: torch.Tensor, tracked: bool):
    """Yield (first column, the map of columns [first, first + n) [n_out, n]) over ``cols`` [n_in, N].

    Up to ``FOLD_CHUNK`` columns: one product, no buffers. More: chunks of ``FOLD_CHUNK``; without
    autograd each chunk is written into two reused buffers (consume it before the next one).
    """
    total = cols.shape[1]
    if total <= FOLD_CHUNK:
        yield 0, _mlp_columns(seq, cols)
        return
    n_hidden, n_out = seq[0].out_features, seq[2].out_features
    if not tracked:
        hidden_buffer, out_buffer = cols.new_empty(n_hidden * FOLD_CHUNK), cols.new_empty(n_out * FOLD_CHUNK)
    for start in range(0, total, FOLD_CHUNK):
        n = min(FOLD_CHUNK, total - start)
        chunk = cols[:, start:start + n]
        if tracked:  # autograd keeps each chunk's hidden for the backward pass anyway
            yield start, _mlp_columns(seq, chunk)
        else:
            yield start, _mlp_columns(seq, chunk, hidden_buffer[:n_hidden * n].view(n_hidden, n),
                                      out_buffer[:n_out * n].view(n_out, n))


def along(seq: nn.Sequential, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply a map to every vector of ``x`` along ``axis`` (that axis changes size n_in -> n_out).

    The vectors are laid out as the columns of a matrix [n_in, N] (a view when ``axis`` is 0
    and ``x`` contiguous, as the stacked layer axis is) and the map runs as two matrix
    products, W2 relu(W1 X + b1) + b2: the same map as the Linear layers applied to each
    vector. It runs over chunks of ``FOLD_CHUNK`` columns written into one output, with or
    without autograd alike, so that a descendant's forward and its ``fold`` compute the
    same numbers bit for bit (BLAS may round a product differently with another number of
    columns); without autograd the chunks also reuse two buffers, so the hidden activations
    never exist for all elements at once.
    """
    moved = x.movedim(axis, 0)
    cols = moved.reshape(moved.shape[0], -1)  # [n_in, N]
    n_out, total = seq[2].out_features, cols.shape[1]
    if total <= FOLD_CHUNK:
        out = _mlp_columns(seq, cols)
    else:
        out = cols.new_empty(n_out, total)
        for start, chunk in _chunks(seq, cols, _tracked(seq, x)):
            out[:, start:start + chunk.shape[1]] = chunk
    return out.reshape(n_out, *moved.shape[1:]).movedim(0, axis)


def along_layers(seq: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Without autograd (folding): ``along(seq, x, 0)`` as n_out separate tensors of shape
    ``x.shape[1:]``, the same numbers. Each owns its memory, so a descendant's blocks can hold
    them as they are: no [n_out, ...] tensor exists, and nothing is copied per layer afterwards."""
    if _tracked(seq, x):
        raise RuntimeError("along_layers is for folding: call it under torch.no_grad(), or use along()")
    cols = x.reshape(x.shape[0], -1)  # [n_in, N]
    outs = [cols.new_empty(cols.shape[1]) for _ in range(seq[2].out_features)]
    for start, chunk in _chunks(seq, cols, tracked=False):
        for out, row in zip(outs, chunk):
            out[start:start + chunk.shape[1]] = row
    return [out.view(x.shape[1:]) for out in outs]
