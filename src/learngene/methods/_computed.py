"""Modules whose weights are computed from learngene parameters, run through a timm template.

TLEG's auxiliary model, PEG's descendants and condenser, Cluster-Learngene's trainable
descendant and MM-LG's condensed CLIP all hold a few trainable tensors (named as the
artifact's tensors: ``theta_A.q.weight``, ``layers.fc1.weight``...) and compute a whole
model's weights from them every forward. ``ComputedViT`` is their common base: subclasses
define ``stack()`` (the canonical stack, differentiable in the parameters) and get
``forward`` (a parameter-less timm VisionTransformer called with ``functional_call`` on that
stack) and ``group``. ``fold_computed`` turns one into the plain timm ViT it computes (each
method's ``fold``).
"""

from __future__ import annotations

from typing import Iterable

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.func import functional_call

from ..arch import ViTArch
from ..stack import BLOCK_MATRICES, VitStack, from_stack
from ..stack.timm_vit import stack_to_state_dict

Tensors = dict[str, torch.Tensor]


def decay_matrices_only(module: nn.Module, block_groups: Iterable[str]) -> set[str]:
    """``no_weight_decay()`` of a module that holds canonical ViT tensors: every parameter but the
    weight matrices, which are ``<group>.<key>`` for each group in ``block_groups`` and key in
    ``BLOCK_MATRICES``, plus ``stem.patch.weight`` and ``head.head.weight``.

    That is timm's rule for the ViT the module computes (Linear/conv weights decay). Needed because
    canonical q/k/v biases are 2-D ([H, hd]), which the trainer's ``ndim <= 1`` rule alone would
    decay; and maps or transforms over weights re-parameterise weights, so they never decay.
    """
    decayed = {f"{group}.{key}" for group in block_groups for key in BLOCK_MATRICES}
    decayed |= {"stem.patch.weight", "head.head.weight"}
    return {name for name, _ in module.named_parameters() if name not in decayed}


def register_nested(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Register ``tensor`` as parameter ``name`` ('theta_A.q.weight') under nested empty modules."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        if part not in module._modules:
            module.add_module(part, nn.Module())
        module = module._modules[part]
    module.register_parameter(leaf, nn.Parameter(tensor))


def strip_parameters(model: nn.Module, *, buffers: bool = True) -> nn.Module:
    """Remove every parameter (and buffer, unless ``buffers=False``) in place: a template for
    ``functional_call``, which then takes them all from the state dict it is given."""
    for module in model.modules():
        for name in [n for n, p in module._parameters.items() if p is not None]:
            del module._parameters[name]
        if buffers:
            for name in [n for n, b in module._buffers.items() if b is not None]:
                del module._buffers[name]
    return model


def parameterless_vit(arch: ViTArch) -> VisionTransformer:
    """A timm VisionTransformer of ``arch`` without parameters (built on the meta device, timm's
    init skipped: even on meta tensors it costs ~0.5 s at DeiT-B)."""
    return strip_parameters(VisionTransformer(**arch.timm_kwargs(), device="meta", weight_init="skip"))


class ComputedViT(nn.Module):
    """Base of the modules that compute a ViT's weights from their own parameters.

    ``template`` is a timm VisionTransformer without parameters (``fused_attn`` switches and
    train/eval mode still apply to it). Weights are computed in full precision, as ``fold``
    computes them, even under the trainer's bf16 autocast; only the ViT itself runs under it.
    """

    def __init__(self, arch: ViTArch, groups: dict[str, Tensors]):
        super().__init__()
        self.arch = arch
        for prefix, tensors in groups.items():
            for name, tensor in sorted(tensors.items()):
                register_nested(self, f"{prefix}.{name}" if prefix else name, tensor.detach().clone())
        self.template = parameterless_vit(self.arch)

    def group(self, prefix: str) -> Tensors:
        """This module's parameters under ``prefix.``, with the prefix removed."""
        start = prefix + "."
        return {k[len(start):]: p for k, p in self.named_parameters() if k.startswith(start)}

    def stack(self) -> VitStack:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,C,H,W] -> [B,K]
        with torch.autocast(x.device.type, enabled=False):
            state = stack_to_state_dict(self.stack())
        return functional_call(self.template, state, (x,))


def fold_computed(module: ComputedViT) -> VisionTransformer:
    """The plain timm VisionTransformer that computes exactly what ``module`` computes (in its
    train/eval mode). The computed blocks go into the model uncopied; the module keeps its parameters."""
    with torch.no_grad():
        stack = module.stack()
    detach = lambda d: {k: v.detach() for k, v in d.items()}  # noqa: E731
    stack = VitStack(arch=stack.arch, stem=detach(stack.stem), blocks=[detach(b) for b in stack.blocks],
                     head=detach(stack.head))
    model = from_stack(stack, consume=True, protect=list(module.parameters()))
    return model.train(module.training)
