"""Stage 1 of Learngene Pool: distil the ancestry into a student, with feature losses through
learnable teacher->student maps, on ``learngene.train.fit``.

    loss = a CE(student, labels) + (1 - a) (KD(student, teacher) + sum_m MSE(s_m, B_m t_m) + sum_m MSE(u_m, A_m v_m))

for each matched pair m = (student block i, teacher block j): s_m / t_m are the outputs of
student block i / teacher block j ([B, T, d_s] / [B, T, D_t]), u_m / v_m the outputs of their
attention sub-layers (after the projection, before layer-scale and the residual), and B_m,
A_m learnable ``Linear(D_t, d_s)`` maps (with bias). KD is DeiT's soft term (KL with
temperature T, times T^2, divided by B*K), the same normalisation and gradient as the
reference's soft cross-entropy mean; MSE is the mean over all elements (MindSpore's
MSELoss). ``fit`` computes (1 - alpha) CE + alpha KD with alpha = 1 - a, and the feature
terms come in through its ``extra_loss`` hook, read from forward hooks on both models.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ...errors import ConfigError
from ...train.distill import soft_distill_loss

Features = dict[tuple[str, int], torch.Tensor]


def default_matches(student_depth: int, teacher_depth: int) -> list[list[int]]:
    """The paper's matching, scaled: n = min(3, d, L) points, student block k d/n - 1 <-> teacher block k L/n - 1.

    d = 9, L = 12: [[2, 3], [5, 7], [8, 11]] (the reference's); d = 6: [[1, 3], [3, 7], [5, 11]].
    """
    n = min(3, student_depth, teacher_depth)
    return [[(k * student_depth) // n - 1, (k * teacher_depth) // n - 1] for k in range(1, n + 1)]


def check_matches(matches: list[list[int]], student_depth: int, teacher_depth: int) -> None:
    for s, t in matches:
        if s >= student_depth or t >= teacher_depth:
            raise ConfigError(f"match [{s}, {t}] is out of range: students have blocks 0..{student_depth - 1}, the "
                              f"ancestry 0..{teacher_depth - 1}; fix matches (or leave it unset for the paper's rule)")


@contextlib.contextmanager
def recording(model: VisionTransformer, blocks: list[int]) -> Iterator[Features]:
    """Forward hooks that keep the latest outputs of ``model.blocks[i]`` and ``model.blocks[i].attn``
    (under keys ("block", i) and ("attn", i)) while the context is open."""
    store: Features = {}
    handles = []

    def keep(key):
        def hook(module, inputs, output):
            store[key] = output
        return hook

    try:
        for i in sorted(set(blocks)):
            handles.append(model.blocks[i].register_forward_hook(keep(("block", i))))
            handles.append(model.blocks[i].attn.register_forward_hook(keep(("attn", i))))
        yield store
    finally:
        for handle in handles:
            handle.remove()


class PoolStudent(nn.Module):
    """A student ViT and its teacher->student maps, trained together by ``fit``.

    ``forward`` is the student's (logits [B, K]); ``block_maps[m]`` and ``attn_maps[m]`` are
    ``Linear(teacher_width, student_width)`` for ``matches[m]`` (PyTorch's default init, as
    MindSpore's Dense in the reference is a plain random init).
    """

    def __init__(self, student: VisionTransformer, teacher_width: int, matches: list[list[int]]):
        super().__init__()
        self.student = student
        self.matches = [list(m) for m in matches]
        width = int(student.embed_dim)
        self.block_maps = nn.ModuleList([nn.Linear(teacher_width, width) for _ in matches])
        self.attn_maps = nn.ModuleList([nn.Linear(teacher_width, width) for _ in matches])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def feature_losses(self, student_features: Features, teacher_features: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """(block-output MSE, attention-output MSE), each summed over the matched pairs."""
        rep = att = None
        for m, (s, t) in enumerate(self.matches):
            # clone(): the teacher ran under inference_mode, and inference tensors cannot be saved for backward
            teacher_block = teacher_features[("block", t)].clone().float()   # [B, T, D_t]
            teacher_attn = teacher_features[("attn", t)].clone().float()     # [B, T, D_t]
            r = F.mse_loss(student_features[("block", s)].float(), self.block_maps[m](teacher_block).float())
            a = F.mse_loss(student_features[("attn", s)].float(), self.attn_maps[m](teacher_attn).float())
            rep, att = (r, a) if rep is None else (rep + r, att + a)
        return rep, att

    def mean_block_map(self) -> torch.Tensor:
        """The mean of the block-output maps' weights [d_s, D_t]: what the pool stores to initialise stitches."""
        return torch.stack([m.weight.detach() for m in self.block_maps]).mean(0)


def pool_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, rep: torch.Tensor,
              att: torch.Tensor, *, alpha: float, tau: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """The paper's loss written out: a CE + (1 - a) (KD + rep + att). ``fit`` computes the same sum as
    ``train_loss(distill='soft', alpha=1 - a)`` + ``extra_loss`` (checked in the tests)."""
    ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    kd = soft_distill_loss(student_logits, teacher_logits, tau)
    return alpha * ce + (1.0 - alpha) * (kd + rep + att)


def make_extra_loss(student: PoolStudent, student_features: Features, teacher_features: Features, alpha: float):
    """``fit``'s extra_loss: (1 - a) (rep + att), from the features the hooks recorded this step."""
    def extra_loss(model, images, labels, logits) -> torch.Tensor:
        rep, att = student.feature_losses(student_features, teacher_features)
        return (1.0 - alpha) * (rep + att)
    return extra_loss
