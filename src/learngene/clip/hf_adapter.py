"""Adapter: Hugging Face ``transformers.CLIPModel`` <-> ``ClipStack``, exact in both directions.

transformers' layout: ``{vision,text}_model.encoder.layers.{i}`` with separate
``self_attn.{q,k,v,out}_proj`` Linears, ``layer_norm1/2``, ``mlp.fc1/fc2``; the image stem is
``vision_model.embeddings`` (conv without bias, ``class_embedding`` [D], ``position_embedding``
an Embedding [T, D]) then ``pre_layrnorm``; ``post_layernorm`` on the pooled class token;
``visual_projection`` / ``text_projection`` Linears without bias ([E, D], as canonical).

Built from a canonical arch with ``eos_token_id = vocab_size - 1`` (the text tower then pools
the first end-of-text token, which is where open_clip's argmax pooling looks too), ``bos`` =
vocab_size - 2 and ``pad`` = 0, layer-norm eps 1e-5 (as open_clip). No tokenizer files are
needed: tokenise with ``learngene.clip.data.CaptionTokenizer`` (open_clip's bundled BPE).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ._tables import Table, clip_stack_to_state_dict, load_exact, state_dict_to_clip_stack
from .stack import ClipStack, clip_arch


def _block_table(prefix: str) -> dict[str, tuple[str, str]]:
    block = f"{prefix}.encoder.layers.{{i}}."
    return {
        "norm1.weight": (block + "layer_norm1.weight", "view"), "norm1.bias": (block + "layer_norm1.bias", "view"),
        "q.weight": (block + "self_attn.q_proj.weight", "view"), "q.bias": (block + "self_attn.q_proj.bias", "view"),
        "k.weight": (block + "self_attn.k_proj.weight", "view"), "k.bias": (block + "self_attn.k_proj.bias", "view"),
        "v.weight": (block + "self_attn.v_proj.weight", "view"), "v.bias": (block + "self_attn.v_proj.bias", "view"),
        "proj.weight": (block + "self_attn.out_proj.weight", "view"),
        "proj.bias": (block + "self_attn.out_proj.bias", "view"),
        "norm2.weight": (block + "layer_norm2.weight", "view"), "norm2.bias": (block + "layer_norm2.bias", "view"),
        "fc1.weight": (block + "mlp.fc1.weight", "view"), "fc1.bias": (block + "mlp.fc1.bias", "view"),
        "fc2.weight": (block + "mlp.fc2.weight", "view"), "fc2.bias": (block + "mlp.fc2.bias", "view"),
    }


HF_TABLE: Table = {
    ("image.stem", "patch.weight"): ("vision_model.embeddings.patch_embedding.weight", "view"),
    ("image.stem", "cls_token"): ("vision_model.embeddings.class_embedding", "view"),       # [D] <-> [1, 1, D]
    ("image.stem", "pos_embed"): ("vision_model.embeddings.position_embedding.weight", "view"),  # [T, D]
    ("image.stem", "norm_pre.weight"): ("vision_model.pre_layrnorm.weight", "view"),        # (sic: transformers' name)
    ("image.stem", "norm_pre.bias"): ("vision_model.pre_layrnorm.bias", "view"),
    ("image.head", "norm.weight"): ("vision_model.post_layernorm.weight", "view"),
    ("image.head", "norm.bias"): ("vision_model.post_layernorm.bias", "view"),
    ("image.head", "proj.weight"): ("visual_projection.weight", "view"),
    ("text.stem", "token_embed.weight"): ("text_model.embeddings.token_embedding.weight", "view"),
    ("text.stem", "pos_embed"): ("text_model.embeddings.position_embedding.weight", "view"),  # [S, D]
    ("text.head", "norm.weight"): ("text_model.final_layer_norm.weight", "view"),
    ("text.head", "norm.bias"): ("text_model.final_layer_norm.bias", "view"),
    ("text.head", "proj.weight"): ("text_projection.weight", "view"),
    ("top", "logit_scale"): ("logit_scale", "view"),
    **{("image.block", k): v for k, v in _block_table("vision_model").items()},
    **{("text.block", k): v for k, v in _block_table("text_model").items()},
}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("transformers is not installed: pip install 'learngene-kit[clip]' "
                          "(or pip install transformers)") from None
    return transformers


def hf_config(arch: dict[str, Any]):
    """A ``transformers.CLIPConfig`` for a canonical CLIP arch."""
    arch = clip_arch(arch)
    img, txt = arch["image"], arch["text"]
    vocab = txt["vocab_size"]
    text_config = dict(vocab_size=vocab, hidden_size=txt["width"], intermediate_size=int(txt["width"] * txt["mlp_ratio"]),
                       num_hidden_layers=txt["layers"], num_attention_heads=txt["heads"],
                       max_position_embeddings=txt["context_length"], hidden_act=arch["act"], layer_norm_eps=1e-5,
                       eos_token_id=vocab - 1, bos_token_id=vocab - 2, pad_token_id=0)
    vision_config = dict(hidden_size=img["width"], intermediate_size=int(img["width"] * img["mlp_ratio"]),
                         num_hidden_layers=img["layers"], num_attention_heads=img["heads"], num_channels=img["in_chans"],
                         image_size=img["image_size"], patch_size=img["patch_size"], hidden_act=arch["act"],
                         layer_norm_eps=1e-5)
    return _transformers().CLIPConfig(text_config=text_config, vision_config=vision_config,
                                      projection_dim=arch["embed_dim"])


def hf_arch(model: torch.nn.Module) -> dict[str, Any]:
    """The canonical arch of a ``transformers.CLIPModel``; ConfigError for what the table does not map."""
    transformers = _transformers()
    if not isinstance(model, transformers.CLIPModel):
        raise ConfigError(f"expected a transformers.CLIPModel, got {type(model).__name__}")
    t, v = model.config.text_config, model.config.vision_config
    if t.hidden_act != v.hidden_act or t.hidden_act not in ("gelu", "quick_gelu"):
        raise ConfigError(f"activations {t.hidden_act!r}/{v.hidden_act!r} are not mapped; use gelu or quick_gelu")
    if t.eos_token_id != t.vocab_size - 1:
        raise ConfigError(f"the text tower pools eos_token_id {t.eos_token_id}, not the last id {t.vocab_size - 1}: "
                          "its pooling then differs from open_clip's argmax pooling, which the adapter assumes")
    return clip_arch({
        "embed_dim": int(model.config.projection_dim), "act": t.hidden_act,
        "image": {"image_size": int(v.image_size), "patch_size": int(v.patch_size), "in_chans": int(v.num_channels),
                  "width": int(v.hidden_size), "layers": int(v.num_hidden_layers), "heads": int(v.num_attention_heads),
                  "mlp_ratio": v.intermediate_size / v.hidden_size},
        "text": {"context_length": int(t.max_position_embeddings), "vocab_size": int(t.vocab_size),
                 "width": int(t.hidden_size), "layers": int(t.num_hidden_layers), "heads": int(t.num_attention_heads),
                 "mlp_ratio": t.intermediate_size / t.hidden_size},
    })


def hf_to_stack(model: torch.nn.Module) -> ClipStack:
    """View a ``transformers.CLIPModel`` as a canonical stack; tensors alias the model's parameters."""
    arch = hf_arch(model)
    state = {k: v.detach() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    return state_dict_to_clip_stack(state, arch, HF_TABLE)


def build_hf_clip(arch: dict[str, Any]) -> torch.nn.Module:
    """A freshly initialised ``transformers.CLIPModel`` for a canonical arch (offline, no files)."""
    model = _transformers().CLIPModel(hf_config(arch))
    return model.eval()


def stack_to_hf(stack: ClipStack) -> torch.nn.Module:
    """A ``transformers.CLIPModel`` holding exactly the stack's tensors (copied)."""
    model = build_hf_clip(stack.arch)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    state = clip_stack_to_state_dict(stack, HF_TABLE, {k: v.shape for k, v in own.items()})
    buffers = {k: v for k, v in model.state_dict().items() if k.endswith("position_ids")}
    return load_exact(model, {**state, **buffers})
