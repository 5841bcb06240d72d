"""Condensing a CLIP into learngene tensors: an auxiliary CLIP computed from them, trained with
``learngene.train.fit``. Shared by MM-LG and the TLEG-per-tower baseline; a *rule*
``blocks(tensors, tower, depth) -> list of canonical blocks`` says how a tower's blocks are
computed from the learngene tensors.

Tensor layout common to both: ``image_stem.*``, ``image_head.*``, ``text_stem.*``,
``text_head.*`` (canonical names of ``learngene.clip.stack``) and ``logit_scale``; the rule
owns every other tensor.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ...clip._tables import clip_stack_to_state_dict
from ...clip.loss import ContrastiveClip, clip_loss
from ...clip.open_clip_adapter import OPEN_CLIP_TABLE, build_open_clip
from ...clip.stack import TOWERS, ClipStack, Tower
from ...stack import BLOCK_MATRICES
from ...train import TrainConfig, fit
from ...train.flops import forward_flops_per_sample
from .._common import pack, unpack
from .._computed import register_nested, strip_parameters

Tensors = dict[str, torch.Tensor]
BlockRule = Callable[[Tensors, str, int], list[Tensors]]


def shell_tensors(stack: ClipStack) -> Tensors:
    """Stems, heads and logit scale of an ancestry, under the learngene's names (copies)."""
    out: Tensors = {"logit_scale": stack.logit_scale.detach().clone().reshape(())}
    for tower in TOWERS:
        out.update(pack(f"{tower}_stem", stack.tower(tower).stem))
        out.update(pack(f"{tower}_head", stack.tower(tower).head))
    return out


def build_tower(tensors: Tensors, rule: BlockRule, tower: str, layers: int) -> Tower:
    """One tower of ``layers`` blocks computed from the tensors (stem and head: the stored ones)."""
    return Tower(stem=unpack(f"{tower}_stem", tensors), blocks=rule(tensors, tower, layers),
                 head=unpack(f"{tower}_head", tensors))


def build_stack(tensors: Tensors, rule: BlockRule, arch: dict[str, Any]) -> ClipStack:
    """The canonical CLIP of ``arch`` (its layer counts pick the depths) computed from the tensors."""
    towers = {t: build_tower(tensors, rule, t, arch[t]["layers"]) for t in TOWERS}
    return ClipStack(arch=arch, image=towers["image"], text=towers["text"], logit_scale=tensors["logit_scale"])


class CondensedClip(nn.Module):
    """An open_clip CLIP whose every weight is computed from learngene parameters (named as the
    artifact's tensors, so ``learngene_tensors()`` is the learngene). ``forward(image, text)``
    returns open_clip's tuple; ``encode_image``/``encode_text`` as open_clip's."""

    def __init__(self, arch: dict[str, Any], tensors: Tensors, rule: BlockRule):
        super().__init__()
        self.arch, self.rule = arch, rule
        self.gene = nn.Module()
        for name, tensor in sorted(tensors.items()):
            register_nested(self.gene, name, tensor.detach().clone())
        template = build_open_clip(arch)  # keeps its buffers (causal mask); parameters removed
        self._shapes = {k: v.shape for k, v in template.state_dict().items()}
        self.template = strip_parameters(template, buffers=False)

    def learngene_tensors(self) -> Tensors:
        return dict(self.gene.named_parameters())

    def _state(self) -> Tensors:
        stack = build_stack(self.learngene_tensors(), self.rule, self.arch)
        return clip_stack_to_state_dict(stack, OPEN_CLIP_TABLE, self._shapes)

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        return functional_call(self.template, self._state(), (image, text))

    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.forward(image, None)[0]

    def encode_text(self, text: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.forward(None, text)[1]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Only matrix weights decay (canonical q/k/v biases are 2-D; mixing weights are not weights)."""
        decayed = (*BLOCK_MATRICES, "patch.weight")
        return {f"gene.{n}" for n, _ in self.gene.named_parameters() if not n.endswith(decayed)}


def condense(aux: CondensedClip, teacher: nn.Module, pairs, config) -> dict[str, Any]:
    """Train ``aux`` on caption pairs: InfoNCE + ``distill_weight`` x (1 - cos) to the teacher's
    embeddings, per tower. Returns the cost (samples, FLOPs incl. the teacher's forward) and summary."""
    teacher = teacher.eval()
    teacher_wrapped = ContrastiveClip(teacher, pairs.tokens)
    student = ContrastiveClip(aux, pairs.tokens)

    def loss_fn(model, images, caption_ids):
        image_f, text_f, scale = model(images, caption_ids)
        loss, logits, targets = clip_loss(image_f, text_f, scale)
        if config.distill_weight > 0:
            with torch.no_grad():
                t_image, t_text, _ = teacher_wrapped(images, caption_ids)
            cos = F.cosine_similarity(image_f, t_image, dim=-1).mean() + F.cosine_similarity(text_f, t_text, dim=-1).mean()
            loss = loss + config.distill_weight * (2 - cos)
        return loss, logits, targets

    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs,
                               seed=config.seed, checkpoint=False, device=config.device)
    result = fit(student, pairs.pairs, None, train_config, loss_fn=loss_fn, progress=False)
    teacher_flops = forward_flops_per_sample(teacher_wrapped, pairs.images[:1]) if config.distill_weight > 0 else 0
    return {"samples_seen": int(result.samples_seen),
            "flops": float(result.train_flops + teacher_flops * result.samples_seen),
            "train_loss": result.train_loss, "train_acc": result.train_acc, "wall_time_s": result.wall_time_s}
