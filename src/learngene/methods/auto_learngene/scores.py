"""Per-layer scores behind ``auto-learngene``: linear CKA with the task, and gradient stability.

Both functions take a timm VisionTransformer (left unchanged) and in-memory tensors
(images float [N, C, H, W] already normalized, labels int [N]) and return one float64
score per block, on the CPU.

Similarity (``layer_scores``), the 2023 "Inheriting Condensed Knowledge" reading.
    The paper keeps the ancestry layers that behave most like a *pseudo descendant*.
    Here the pseudo descendant is the ideal descendant of the target task: one whose
    penultimate features have collapsed onto their class means (neural collapse,
    Papyan et al. 2020). For balanced classes the centred Gram matrix of such features is
    exactly the centred Gram matrix of the one-hot labels (up to scale), so the score of
    layer l is

        score[l] = CKA_linear(F_l, onehot(y))

    with F_l [n, D] the layer's output features on the probe batch (the mean of its patch
    tokens, or the class token). It lies in [0, 1] and grows as the layer's centred feature
    covariance lines up with the between-class structure of the target task (1: the
    features are an isotropic simplex of class means). The other candidate reference, the ancestry's own final layer,
    is not used: it measures closeness to the top of the ancestry (neighbouring layers
    always win) and never looks at the target labels.

Gradient stability (``gradient_scores``), the AAAI 2022 reading.
    A copy of the ancestry is fine-tuned on a stream of ``num_tasks`` tasks (random class
    subsets of the data, a fresh linear head per task, ``steps`` SGD steps each, the body
    carried over from task to task as in the paper's continual stream). At every step s
    the gradient g_{l,s} of block l's parameters (flattened, before clipping) is recorded,
    and

        score[l] = mean_s ||g_{l,s} - g_{l,s-1}|| / (||g_{l,s}|| + ||g_{l,s-1}||)

    over all consecutive steps of the stream, task switches included. The ratio lies in
    [0, 1] and is scale-free, so a block is not called stable merely because its gradients
    are small. Lower = the block's gradient changes least = kept.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError

Tensor = torch.Tensor


# -- linear CKA -------------------------------------------------------------------------
def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n samples.

    ``x`` [n, p] and ``y`` [n, q] (any trailing shape is flattened). Computed in float64 as
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc, which equals
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for the linear kernels K = X X^T, L = Y Y^T.
    Invariant to orthogonal transforms and isotropic scaling of either side; 0 if either
    side is constant over the samples.
    """
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"CKA needs the same samples on both sides, got {x.shape[0]} and {y.shape[0]}")
    n = x.shape[0]
    x = x.reshape(n, -1).detach().to("cpu", torch.float64)
    y = y.reshape(n, -1).detach().to("cpu", torch.float64)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    if x.shape[1] + y.shape[1] > 2 * n:  # wide features: the n x n Gram form is cheaper
        kx, ky = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (kx * ky).sum(), kx.norm(), ky.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).square().sum(), (x.T @ x).norm(), (y.T @ y).norm()
    if norm_x <= 0 or norm_y <= 0:
        return 0.0
    return float(cross / (norm_x * norm_y))


def one_hot_labels(labels: Tensor) -> Tensor:
    """[n] class ids -> [n, C] float64 one-hot over the classes present (C = distinct labels)."""
    _, index = torch.unique(labels.reshape(-1).cpu(), return_inverse=True)
    return F.one_hot(index).to(torch.float64)


def block_features(model: nn.Module, images: Tensor, *, pool: str = "mean", batch_size: int = 64) -> list[Tensor]:
    """Each block's output on ``images``, pooled per image: a list of L tensors [n, D] float64 (CPU).

    pool "mean": the average of the patch tokens (prefix tokens left out, as timm's avg pool);
    pool "cls": the class token. The model runs in eval mode without gradients; its mode is restored.
    """
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    if pool == "cls" and getattr(model, "cls_token", None) is None:
        raise ConfigError("pool='cls' needs an ancestry with a class token; use pool='mean'")
    chunks: list[list[Tensor]] = [[] for _ in model.blocks]

    def hook(index: int):
        def save(_module, _inputs, output):  # output [b, T, D]
            pooled = output[:, 0] if pool == "cls" else output[:, prefix:].mean(1)
            chunks[index].append(pooled.detach().to("cpu", torch.float64))
        return save

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(model.blocks)]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                model.forward_features(images[start:start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [torch.cat(c) for c in chunks]


def layer_scores(ancestry: nn.Module, images: Tensor, labels: Tensor, *, pool: str = "mean",
                 batch_size: int = 64) -> Tensor:
    """Linear CKA of every block's output with the one-hot label kernel: float64 [L], higher = more task-aligned."""
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"{images.shape[0]} probe images but {labels.shape[0]} labels")
    target = one_hot_labels(labels)
    if target.shape[1] < 2:
        raise ConfigError("the probe batch holds a single class, so no layer can be scored against the labels; "
                          "pass data with at least 2 classes")
    feats = block_features(ancestry, images, pool=pool, batch_size=batch_size)
    return torch.tensor([linear_cka(f, target) for f in feats], dtype=torch.float64)


# -- gradient stability ------------------------------------------------------------------
def _block_grad(block: nn.Module) -> Tensor:
    """The block's gradient as one flat float32 vector (a copy, on the model's device)."""
    grads = [p.grad.reshape(-1).float() for p in block.parameters() if p.grad is not None]
    return torch.cat(grads) if grads else torch.zeros(1, device=next(block.parameters()).device)


def gradient_scores(ancestry: nn.Module, images: Tensor, labels: Tensor, *, num_tasks: int = 3,
                    task_classes: int = 5, steps: int = 20, batch_size: int = 32, lr: float = 0.01,
                    seed: int = 0, device: torch.device | str = "cpu") -> tuple[Tensor, dict[str, Any]]:
    """Mean relative change of each block's gradient over a short fine-tuning stream: float64 [L].

    Lower = more stable. Returns (scores, info) with info = {"samples_seen", "tasks"} where
    tasks lists each task's classes. ``ancestry`` itself is not modified (a copy is trained).
    The stream runs in eval mode (no dropout / drop-path: the gradients differ only because
    the batch, the task and the weights change), SGD momentum 0.9, gradient-norm clip 1.0.
    """
    classes = torch.unique(labels.cpu())
    if classes.numel() < 2:
        raise ConfigError("the gradient criterion needs data with at least 2 classes")
    per_task = min(task_classes, classes.numel())
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(device)

    model = copy.deepcopy(ancestry).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    depth = len(model.blocks)
    change_sum = torch.zeros(depth, dtype=torch.float64)
    pairs = 0
    previous: list[Tensor] | None = None
    tasks: list[list[int]] = []
    seen = 0
    for task in range(num_tasks):
        chosen = classes[torch.randperm(classes.numel(), generator=gen)[:per_task]].sort().values
        tasks.append([int(c) for c in chosen])
        member = (labels.cpu().unsqueeze(1) == chosen.unsqueeze(0))  # [N, m]
        pool = member.any(1).nonzero().squeeze(1)                   # indices of this task's samples
        task_labels = member.float().argmax(1)                       # remapped to 0..m-1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + task)
            model.reset_classifier(per_task)                         # a fresh head per task
        model.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        for _ in range(steps):
            idx = pool[torch.randint(pool.numel(), (batch_size,), generator=gen)]
            x, y = images[idx].to(device), task_labels[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            grads = [_block_grad(b) for b in model.blocks]
            if previous is not None:
                change = torch.stack([(g - h).norm() / (g.norm() + h.norm()).clamp_min(1e-30)
                                      for g, h in zip(grads, previous)])
                change_sum += change.double().cpu()
                pairs += 1
            previous = grads
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            seen += batch_size
    scores = change_sum / max(pairs, 1)
    if not torch.isfinite(scores).all():
        raise ConfigError("gradients became NaN/inf while scoring layers; lower lr (e.g. lr=0.001)")
    return scores, {"samples_seen": seen, "tasks": tasks}

