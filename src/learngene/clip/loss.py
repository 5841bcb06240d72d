"""CLIP's contrastive loss (InfoNCE, learnable temperature) and its plug into ``learngene.train.fit``.

    loss = ( CE(s * I T^T, targets) + CE(s * T I^T, targets) ) / 2

with I, T the L2-normalised image and text embeddings of a batch [b, E], s = exp(logit_scale)
clamped to 100 (CLIP clamps the parameter after each step; we clamp inside the loss, which
has the same effect on the forward and stops the gradient beyond the clamp), targets the
diagonal. Under DDP the embeddings are all-gathered *with gradients*
(``torch.distributed.nn.all_gather``): each rank scores its b rows against all B columns in
both directions and DDP averages the gradients, which is exactly the gradient of the loss
over the global batch -- a 2-process run matches a 1-process run at the same global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = 100.0


def _gather(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(all ranks' features [B, E] with gradients, this rank's row offset); local when not distributed."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not torch.is_grad_enabled():
        return features, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(features)
    return torch.cat(parts, dim=0), dist.get_rank() * features.shape[0]


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE -> (loss, image->text logits [b, B], targets [b]).

    ``image_features``/``text_features`` [b, E] already L2-normalised (pair i = row i);
    ``logit_scale`` is the exponentiated scale (open_clip's forward returns it so).
    """
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE)
    all_images, offset = _gather(image_features)
    all_texts, _ = _gather(text_features)
    logits_per_image = scale * image_features @ all_texts.t()  # [b, B]
    logits_per_text = scale * text_features @ all_images.t()   # [b, B]
    targets = torch.arange(image_features.shape[0], device=image_features.device) + offset
    loss = (F.cross_entropy(logits_per_image.float(), targets) + F.cross_entropy(logits_per_text.float(), targets)) / 2
    return loss, logits_per_image.detach(), targets


class ContrastiveClip(nn.Module):
    """A CLIP to train with ``fit``: forward(images, caption_ids) -> (image emb, text emb, scale).

    ``clip`` is anything whose ``forward(image, text)`` returns open_clip's tuple
    (normalised image features, normalised text features, exp(logit_scale)): an
    ``open_clip.CLIP`` or a condensed auxiliary model. ``tokens`` [M, S] are the captions;
    a batch's labels are caption ids. Grey images are repeated to the 3 channels open_clip
    expects (a view). Without caption ids (fit's one-sample FLOP count) caption 0 is used.
    """

    def __init__(self, clip: nn.Module, tokens: torch.Tensor, in_chans: int = 3):
        super().__init__()
        self.clip = clip
        self.in_chans = int(in_chans)
        self.register_buffer("tokens", tokens.long(), persistent=False)  # [M, S]

    def forward(self, images: torch.Tensor, caption_ids: torch.Tensor | None = None):
        if images.shape[1] == 1 and self.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)  # [b,1,H,W] -> [b,3,H,W]
        if caption_ids is None:
            caption_ids = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        out = self.clip(images, self.tokens[caption_ids])
        return out[0], out[1], out[2]


def contrastive_loss_fn(model: nn.Module, images: torch.Tensor, caption_ids: torch.Tensor):
    """``fit(loss_fn=...)`` for a ``ContrastiveClip``: (InfoNCE, logits, targets) -- the train
    accuracy is in-batch image->caption top-1."""
    image_features, text_features, scale = model(images, caption_ids)
    return clip_loss(image_features, text_features, scale)
