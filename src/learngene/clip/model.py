"""CLIP models for learngene: the CPU preset, contrastive training through ``fit``, evaluation
(zero-shot accuracy, retrieval recall@K), loading an ancestry, and the image tower as a plain
timm ViT classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_save_safetensors, atomic_write_json
from ..arch import ViTArch
from ..errors import ArtifactError, ConfigError
from ..stack import from_stack
from ..stack.init import blank_stack
from ..train import fit
from .data import OPEN_CLIP_VOCAB, CaptionPairs, CaptionTokenizer
from .hf_adapter import hf_to_stack
from .loss import ContrastiveClip, contrastive_loss_fn
from .open_clip_adapter import build_open_clip, open_clip_to_stack, stack_to_open_clip
from .stack import ClipStack, clip_arch


def clip_mini_arch(vocab_size: int, *, image_layers: int = 6, text_layers: int = 6, width: int = 96,
                   heads: int = 6, embed_dim: int = 64, context_length: int = 16) -> dict[str, Any]:
    """The CPU-scale CLIP: a vit-mini-like image tower (28x28, patch 7, width 96, 6 heads, grey
    images repeated to 3 channels) and a text tower of the same width (so blocks can be shared)."""
    return clip_arch({
        "embed_dim": embed_dim, "act": "gelu",
        "image": {"image_size": 28, "patch_size": 7, "in_chans": 3, "width": width, "layers": image_layers,
                  "heads": heads, "mlp_ratio": 4.0},
        "text": {"context_length": context_length, "vocab_size": vocab_size, "width": width, "layers": text_layers,
                 "heads": heads, "mlp_ratio": 4.0},
    })


def train_clip(model: nn.Module, pairs: CaptionPairs, config, *, out_dir: str | Path | None = None,
               progress: bool = False):
    """Contrastive training of an open_clip-like model on caption pairs through ``learngene.train.fit``
    (DDP under torchrun). ``config`` is a ``TrainConfig`` (label_smoothing/distill are unused)."""
    wrapped = ContrastiveClip(model, pairs.tokens)
    return fit(wrapped, pairs.pairs, None, config, out_dir=out_dir, loss_fn=contrastive_loss_fn, progress=progress)


# -- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
          batch_size: int = 512) -> torch.Tensor:
    """L2-normalised embeddings of images [N,C,H,W] (grey repeated to 3) or tokens [M,S] -> [N, E]."""
    was_training = model.training
    model.eval()
    out = []
    data = images if images is not None else tokens
    for part in data.split(batch_size):
        if images is not None:
            part = part.expand(-1, 3, -1, -1) if part.shape[1] == 1 else part
            out.append(model.encode_image(part, normalize=True))
        else:
            out.append(model.encode_text(part, normalize=True))
    model.train(was_training)
    return torch.cat(out).float()


def class_text_embeddings(model: nn.Module, pairs: CaptionPairs) -> torch.Tensor:
    """[K, E]: per class, the normalised mean of its captions' embeddings (prompt ensembling)."""
    texts = embed(model, tokens=pairs.tokens)  # [M, E]
    K = len(pairs.class_names)
    means = torch.stack([texts[pairs.caption_class == c].mean(0) for c in range(K)])
    return torch.nn.functional.normalize(means, dim=-1)


def evaluate_clip(model: nn.Module, pairs: CaptionPairs, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Zero-shot top-1 and retrieval recall@K (see ``learngene.clip.data``: a hit = same meaning).

    image->text: each image against the distinct captions; text->image: each image's caption
    against all images, a hit when one of the top K images has that caption's meaning.
    """
    images = embed(model, images=pairs.images)  # [N, E]
    texts = embed(model, tokens=pairs.tokens)  # [M, E]
    out: dict[str, float] = {}
    classes = class_text_embeddings(model, pairs)
    out["zero_shot_acc"] = float(((images @ classes.t()).argmax(1) == pairs.labels).float().mean())
    meaning_of_image = pairs.caption_meaning[pairs.caption_ids]  # [N]
    i2t = (images @ texts.t()).topk(max(ks), dim=1).indices  # [N, k] caption indices
    i2t_hit = pairs.caption_meaning[i2t] == meaning_of_image[:, None]
    t2i = (texts[pairs.caption_ids] @ images.t()).topk(max(ks), dim=1).indices  # [N, k] image indices
    t2i_hit = meaning_of_image[t2i] == meaning_of_image[:, None]
    for k in ks:
        out[f"i2t_r@{k}"] = float(i2t_hit[:, :k].any(1).float().mean())
        out[f"t2i_r@{k}"] = float(t2i_hit[:, :k].any(1).float().mean())
        out[f"r@{k}"] = (out[f"i2t_r@{k}"] + out[f"t2i_r@{k}"]) / 2
    return out


# -- ancestry loading ---------------------------------------------------------------------
CLIP_ARCH_FILE = "clip_arch.json"
ANCESTRY_FILES = (CLIP_ARCH_FILE, "model.safetensors", "tokenizer.json")


def is_clip_folder(path: str | Path) -> bool:
    """A folder written by ``save_clip_ancestry`` (what the CLI's finetune/eval treat as a CLIP)."""
    return (Path(path) / CLIP_ARCH_FILE).is_file()


def save_clip_ancestry(stack: ClipStack, tokenizer: CaptionTokenizer, folder: str | Path) -> Path:
    """A local CLIP ancestry folder: arch, open_clip weights, and the compact tokenizer table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = stack_to_open_clip(stack)
    atomic_save_safetensors(folder / "model.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
    atomic_write_json(folder / "tokenizer.json", tokenizer.to_dict())
    atomic_write_json(folder / CLIP_ARCH_FILE, stack.arch)
    return folder


WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def is_hf_clip_folder(path: str | Path) -> bool:
    """A Hugging Face CLIP folder (``CLIPModel.save_pretrained``: config.json of model_type clip)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "clip"
    except (ValueError, AttributeError):
        return False


def _pretrained_tokenizer(stack: ClipStack) -> CaptionTokenizer | None:
    """The full BPE tokenizer for a CLIP with open_clip's / OpenAI's 49,408-token table; None otherwise."""
    text = stack.arch["text"]
    return CaptionTokenizer.full(text["context_length"]) if text["vocab_size"] == OPEN_CLIP_VOCAB else None


def _open_clip_from(spec: str) -> nn.Module:
    """``open_clip:<model>[/<pretrained tag or weights file>]`` -> an open_clip model (weights_only for files)."""
    import open_clip

    name, _, pretrained = spec.partition("/")
    looks_like_file = pretrained.lower().endswith(WEIGHT_SUFFIXES) or "/" in pretrained
    if looks_like_file and not Path(pretrained).is_file():
        raise ConfigError(f"open_clip weights file {pretrained!r} does not exist")
    if name not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {name!r}: give one of open_clip.list_models() "
                          "(such as ViT-B-32, or ViT-B-32-quickgelu for OpenAI's weights)")
    try:
        return open_clip.create_model(name, pretrained=pretrained or None)
    except Exception as e:  # a file of another architecture, a tag that cannot be fetched offline
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        fix = ("the file must hold this model's state dict" if looks_like_file else
               "offline, download the weights elsewhere and pass open_clip:<model>/<file>")
        raise ArtifactError(f"cannot load open_clip {spec!r}: {type(e).__name__}: {first[:300]}; {fix}") from None


def _hf_clip_from(source: str) -> nn.Module:
    """``CLIPModel.from_pretrained``: a local folder offline, a Hub repo id online."""
    from transformers import CLIPModel

    local = Path(source).is_dir()
    try:
        return CLIPModel.from_pretrained(source, local_files_only=local)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArtifactError(f"cannot load a Hugging Face CLIP from {source!r}: {type(e).__name__}: {first[:300]}; "
                            "pass a folder written by CLIPModel.save_pretrained") from None


def load_clip_ancestry(source: Any) -> tuple[ClipStack, CaptionTokenizer | None]:
    """A CLIP ancestry as (canonical stack, tokenizer or None) from:

    - an ``open_clip.CLIP`` or ``transformers.CLIPModel`` instance;
    - a folder written by ``save_clip_ancestry`` (local files, offline);
    - a Hugging Face CLIP folder (``CLIPModel.save_pretrained``: config.json + weights; offline);
    - ``"open_clip:<model>/<pretrained>"``: ``<pretrained>`` a tag (``open_clip:ViT-B-32/openai``,
      online) or a local weights file (``open_clip:ViT-B-32/clip.pt``, a state dict or open_clip's
      training checkpoint, read with ``weights_only=True``; the model name gives the architecture);
    - ``"hf:<repo id or local folder>"`` (``CLIPModel.from_pretrained``; online unless local).
    Pretrained models with the 49,408-token BPE table get the full BPE tokenizer
    (``CaptionTokenizer.full``); other vocabularies None (tokenise captions for them yourself).
    """
    if isinstance(source, nn.Module):
        if type(source).__name__ == "CLIPModel":
            stack = hf_to_stack(source)
        elif hasattr(source, "visual") and hasattr(source, "transformer"):  # open_clip.CLIP's two towers
            stack = open_clip_to_stack(source)
        else:
            raise ConfigError(f"a CLIP ancestry has an image and a text tower; got a {type(source).__name__}. Pass an "
                              "open_clip.CLIP or transformers.CLIPModel, or a folder of `learngene clip-ancestry`")
        return stack, _pretrained_tokenizer(stack)
    if isinstance(source, (str, Path)) and is_clip_folder(source):
        from safetensors.torch import load_file

        folder = Path(source)
        arch = clip_arch(json.loads((folder / CLIP_ARCH_FILE).read_text()))
        model = build_open_clip(arch)
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        return open_clip_to_stack(model), CaptionTokenizer.from_dict(json.loads((folder / "tokenizer.json").read_text()))
    if isinstance(source, (str, Path)) and is_hf_clip_folder(source):
        return load_clip_ancestry(_hf_clip_from(str(source)))
    if isinstance(source, str) and source.startswith("open_clip:"):
        return load_clip_ancestry(_open_clip_from(source.removeprefix("open_clip:")))
    if isinstance(source, str) and source.startswith("hf:"):
        return load_clip_ancestry(_hf_clip_from(source.removeprefix("hf:")))
    if isinstance(source, (str, Path)) and str(source).lower().endswith(WEIGHT_SUFFIXES) and Path(source).is_file():
        raise ConfigError(f"{source} is a weights file: a CLIP's architecture is not in its weights, so name the "
                          f"open_clip model it belongs to: open_clip:ViT-B-32/{source}")
    raise ConfigError(f"cannot load a CLIP ancestry from {source!r}: pass a folder of `learngene clip-ancestry`, a "
                      "Hugging Face CLIP folder, 'open_clip:<model>/<tag or weights file>' or 'hf:<repo or folder>'")


# -- the image tower as a timm classifier -------------------------------------------------
def image_classifier_arch(arch: dict[str, Any], num_classes: int, *, depth: int | None = None,
                          in_chans: int = 1) -> ViTArch:
    """The timm VisionTransformer architecture computing the CLIP image tower (+ a classifier): class-token
    pooling, pre-norm (CLIP's ln_pre; timm then drops the patch bias), final norm = ln_post."""
    img = clip_arch(arch)["image"]
    return ViTArch(img_size=img["image_size"], patch_size=img["patch_size"], in_chans=in_chans, num_classes=num_classes,
                   global_pool="token", embed_dim=img["width"], depth=img["layers"] if depth is None else depth,
                   num_heads=img["heads"], mlp_ratio=img["mlp_ratio"], qkv_bias=True, class_token=True,
                   pre_norm=True, fc_norm=False, final_norm=True)


def image_tower_to_timm(stack: ClipStack, num_classes: int, *, in_chans: int = 1,
                        class_embeddings: torch.Tensor | None = None, blocks_given: bool = False):
    """A timm ``VisionTransformer`` whose features are the CLIP image tower's (before projection).

    ``in_chans=1``: the patch filter summed over the 3 channels (exact for grey images repeated
    to 3). ``class_embeddings`` [K, E] (normalised class text embeddings): the classifier is
    initialised to ``T W_proj`` [K, D], whose argmax is exactly CLIP's zero-shot prediction
    (the image embedding's norm is a positive per-image factor); else timm's init.
    Departure: timm's LayerNorm eps is 1e-6, CLIP's 1e-5 (a ~1e-6 relative difference).
    ``blocks_given``: the image blocks were computed for this call (a learngene's expansion) and
    go into the model uncopied; otherwise every tensor of the stack is copied.
    """
    arch = image_classifier_arch(stack.arch, num_classes, depth=len(stack.image.blocks), in_chans=in_chans)
    target = blank_stack(arch)  # placeholders: only a classifier without class embeddings is drawn (timm's init)
    stem, head = stack.image.stem, stack.image.head
    patch = stem["patch.weight"]  # [D, 3, p, p]
    if in_chans != patch.shape[1]:
        if in_chans != 1:
            raise ConfigError(f"in_chans must be 1 or {patch.shape[1]}, got {in_chans}")
        patch = patch.sum(1, keepdim=True)
    target.stem.update({"patch.weight": patch, "cls_token": stem["cls_token"], "pos_embed": stem["pos_embed"],
                        "norm_pre.weight": stem["norm_pre.weight"], "norm_pre.bias": stem["norm_pre.bias"]})
    target.blocks = [dict(block) for block in stack.image.blocks]
    target.head.update({"norm.weight": head["norm.weight"], "norm.bias": head["norm.bias"]})
    if class_embeddings is not None:
        target.head["head.weight"] = class_embeddings.detach().float() @ head["proj.weight"].detach()  # [K, E] x [E, D]
        target.head["head.bias"] = torch.zeros(num_classes)
    tower = [*stem.values(), *head.values()]
    if not blocks_given:
        tower += [t for block in stack.image.blocks for t in block.values()]
    # The tower's own tensors are copied into the model; what is computed here goes in uncopied.
    return from_stack(target, consume=True, protect=tower)


def open_clip_from_stack(stack: ClipStack) -> nn.Module:
    return stack_to_open_clip(stack)
