"""PEG: Vision Transformers as Probabilistic Expansion from Learngene (Wang et al., ICML 2024;
code BruceQFWang/ICML2024-PEG).

Learngene (stored). L_b layers, each with H_b attention heads and one FFN:
  - heads: learngene head j of layer l = sum_h p[l, j, h] * ancestry head h of the ancestry
    layer matched to l (its q/k/v rows and biases and its proj input columns, all with the
    same weight); the matched layers are L_b evenly spaced ones (weight selection's
    ``uniform_indices``: 0, 2, ..., 10 of 12). Heads keep the ancestry's head_dim.
  - FFN: learngene FFN k = sum_l p'[k, l] * ancestry FFN l over all L_a layers (fc1 and
    fc2, weights and biases, with the same weight).
  - norm1, norm2, proj.bias (and layer-scale gammas) are the matched layer's (the reference
    keeps them per layer, unmixed).
  - stem (patch and position embeddings, class token), final norm and classifier.
  - ``maps.*``: the expansion maps learned with it for the auxiliary shape (the ancestry's
    depth and heads); descendants of that shape start from them, others from fresh maps.
Tensor names: ``layers.<canonical key>`` stacked over the L_b layers (``layers.q.weight``
[L_b, H_b, hd, D], ``layers.proj.weight`` [L_b, D, H_b, hd], ``layers.fc1.weight``
[L_b, F, D]...), ``stem.*``, ``head.*``, ``maps.*`` (a ``PegMaps`` state dict).

Mixture weights (``distribution``): ``softmax`` softmax(N(0, 1)) over the mixed axis (the
reference's "Gaussian-Layer"; the default, from the ``ablate`` suite's controls: see
``PegConfig``), ``gaussian`` p ~ N(0, 1) (the paper's Algorithm 1),
``uniform`` 1/n (the reference's other branch; every learngene head of a layer is then the
same). ``resample="epoch"`` draws fresh weights each condensing epoch (Algorithm 1: "for
e = 1..E: p ~ G(0, I)"), ``"once"`` draws them once (the reference, at model build).

Condensing (how the learngene is fitted). Algorithm 1 only samples; the reference then
trains the sampled model on ImageNet. Here the auxiliary model ``PegCondenser`` holds the
*pool* the mixtures read (the matched layers' H_a heads and norms, all L_a FFNs, initialised
from the ancestry), the stem, the head and the maps, all trainable. Each step it forms the
learngene from the pool with the current epoch's weights, expands it with the maps to the
ancestry's shape (L_a layers, H_a heads) and runs a parameter-less timm ViT on the result
through ``torch.func.functional_call``. It is trained by soft distillation from the
ancestry with ``learngene.train.fit`` (loss (1 - alpha) CE + alpha KD, alpha 1). The stored
learngene is the mixture of the trained pool with the last epoch's weights (the draw the
final evaluation measured); ``epochs=0`` stores one draw of the untrained mixture and reads
no data. Epochs are counted by the condenser's training-mode forwards (``fit`` makes one per
step, ``steps_per_epoch`` per epoch).

Descendants (any depth L_d >= 1, any head count H_d with embed_dim % H_d == 0; the
ancestry's embed_dim and MLP width). ``expand_trainable`` builds ``PegDescendant``: the
learngene tensors (trainable: the paper trains descendants fully) and maps L_b -> L_d,
H_b -> H_d (``maps.py``), run as a timm ViT via functional_call; train it with
``learngene.train.fit`` and ``fold`` it into a plain timm VisionTransformer (exact: the
folded model computes the same outputs). The registry's ``expand`` folds at once. When the
descendant's head_dim D/H_d differs from the learngene's D/H_a, each head keeps evenly spaced
dims (fewer) or gets timm-initialised trainable extra dims (more). Inherited tensors are
never re-initialised: timm's init runs only on a separate template for the parts the
learngene does not give (a new classifier, extra head dims, a missing class token).

Departures from the paper and the reference code:
  - The head maps act on weights (q, k with one map, v with another, proj's input columns
    with a third), not on attention logits and V: this makes the descendant a plain ViT.
    Likewise the head mixture mixes q and k separately, so a mixed head's QK^T has cross
    terms sum_h sum_h' p_h p_h' Q_h K_h'^T where the paper mixes QK^T directly.
  - The paper's descendants keep the ancestry's depth for attention (the reference builds
    block i from ancestry layer i's heads); ours have any depth, so the learngene has L_b
    attention layers too, expanded by a second layer map.
  - ``map_form="split"`` (default) widens the maps' hidden layer to 2 n_out so they start
    as exact interpolation (``maps.py``); ``"paper"`` is the paper's width with random init.
  - Not reproduced (the reference's defects): its head mixture is computed and then
    overwritten by the first H_b heads; its FFN map writes through ``.data``, so it never
    trains; its final ``apply(_init_weights)`` re-initialises almost every inherited
    weight (and pos_embed / cls_token). Here the mixture is used, every map gets gradients,
    and no init touches an inherited tensor (all tested).
  - Teacher: the ancestry (distillation); the reference trains with labels only. Recipe:
    learngene.train's (AdamW, warmup + cosine), not the reference's; the maps get no
    weight decay (they re-parameterise weights that are already decayed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import VitStack, from_stack, to_stack
from ...stack.init import blank_stack, materialize
from .._common import split_holdout, copy_head_if_same_labels, distill_from_ancestry, fit_stem, pack, unpack
from .._computed import ComputedViT, decay_matrices_only, fold_computed, register_nested
from .._indices import uniform_indices
from .config import PegConfig, default_learngene_heads, default_learngene_layers
from .maps import DIM_AXIS, HEAD_AXIS, PegMaps, expand_layers

Tensors = dict[str, torch.Tensor]

FFN_MIXED = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")   # mixed across all L_a layers
HEAD_MIXED = tuple(HEAD_AXIS)                                       # q/k/v weights and biases, proj.weight


# -- sampling the learngene -----------------------------------------------------------------
def matched_layers(ancestry_layers: int, learngene_layers: int) -> list[int]:
    """The ancestry layer whose heads (and norms) learngene layer l mixes: evenly spaced."""
    return uniform_indices(ancestry_layers, learngene_layers).tolist()


def mixture_weights(distribution: str, *, layers: int, heads: int, ancestry_heads: int, ancestry_layers: int,
                    seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_head [L_b, H_b, H_a], p_ffn [L_b, L_a]) for one epoch: a function of (seed, epoch) only."""
    shapes = ((layers, heads, ancestry_heads), (layers, ancestry_layers))
    if distribution == "uniform":
        return tuple(torch.full(s, 1.0 / s[-1]) for s in shapes)  # type: ignore[return-value]
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    p_head, p_ffn = (torch.randn(s, generator=g) for s in shapes)
    if distribution == "softmax":
        p_head, p_ffn = p_head.softmax(-1), p_ffn.softmax(-1)
    return p_head, p_ffn


def ancestry_pool(stack: VitStack, learngene_layers: int) -> Tensors:
    """What the mixtures read: per learngene layer, its matched ancestry layer's tensors
    (heads [L_b, H_a, hd, D], proj [L_b, D, H_a, hd], norms [L_b, D]...); FFNs of all layers [L_a, ...]."""
    matched = matched_layers(stack.depth, learngene_layers)
    pool = {}
    for key in stack.blocks[0]:
        rows = range(stack.depth) if key in FFN_MIXED else matched
        pool[key] = torch.stack([stack.blocks[i][key] for i in rows])
    return pool


def sample_learngene(pool: Tensors, p_head: torch.Tensor, p_ffn: torch.Tensor) -> Tensors:
    """Learngene layers from the pool: heads mixed per layer, FFNs mixed across layers, the rest as is."""
    out = {}
    for key, t in pool.items():
        if key == "proj.weight":                      # [L_b, D, H_a, hd] -> [L_b, D, H_b, hd]
            out[key] = torch.einsum("ljh,ldhe->ldje", p_head.to(t), t)
        elif key in HEAD_MIXED:                       # [L_b, H_a, hd(, D)] -> [L_b, H_b, hd(, D)]
            out[key] = torch.einsum("ljh,lh...->lj...", p_head.to(t), t)
        elif key in FFN_MIXED:                        # [L_a, ...] -> [L_b, ...]
            out[key] = torch.einsum("kl,l...->k...", p_ffn.to(t), t)
        else:                                         # norms, proj.bias, layer-scales: [L_b, D]
            out[key] = t
    return out


# -- the trainable descendant and the auxiliary model -------------------------------------
class PegDescendant(ComputedViT):
    """A PEG descendant before folding: learngene tensors + expansion maps, trained together.

    Parameters: ``layers.*`` (the learngene's L_b layers), ``stem.*``, ``head.*``,
    ``extra.*`` (head dims beyond the learngene's, if any) and ``maps`` (``PegMaps``).
    ``forward`` expands with the maps and runs a parameter-less timm VisionTransformer of
    ``arch`` on the result (``torch.func.functional_call``); ``fold`` turns it into that ViT.
    """

    def __init__(self, arch: ViTArch, *, layers: Tensors, stem: Tensors, head: Tensors, maps: PegMaps,
                 extra: Tensors | None = None):
        super().__init__(arch, {"layers": layers, "stem": stem, "head": head, "extra": extra or {}})
        self.maps = maps

    def learngene_layers(self) -> Tensors:
        return self.group("layers")

    def stack(self) -> VitStack:
        """The descendant's canonical stack (differentiable in every parameter)."""
        head_dim = self.arch.embed_dim // self.arch.num_heads
        blocks = expand_layers(self.learngene_layers(), self.maps, head_dim, self.group("extra") or None)
        return VitStack(arch=self.arch, stem=self.group("stem"), blocks=blocks, head=self.group("head"))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Decay only weight matrices (as timm's rule gives the ViT); never the maps."""
        return decay_matrices_only(self, ("layers", "extra", "pool"))


class PegCondenser(PegDescendant):
    """The auxiliary model of condensing: the ancestry-shaped descendant of a learngene that is
    re-sampled from a trainable pool (``pool.*``, initialised from the ancestry) every epoch.

    The epoch is the number of training-mode forwards // ``steps_per_epoch`` (``fit`` makes
    one forward per step); eval-mode forwards use the last training epoch's draw.
    """

    def __init__(self, arch: ViTArch, *, pool: Tensors, stem: Tensors, head: Tensors, maps: PegMaps,
                 learngene_heads: int, distribution: str, resample: str, seed: int, steps_per_epoch: int = 1):
        super().__init__(arch, layers={}, stem=stem, head=head, maps=maps)
        for name, tensor in sorted(pool.items()):
            register_nested(self, f"pool.{name}", tensor.detach().clone())
        self.learngene_heads = int(learngene_heads)
        self.distribution, self.resample, self.seed = distribution, resample, int(seed)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epoch = 0
        self._train_forwards = 0
        self._on_device: tuple[Any, tuple[torch.Tensor, torch.Tensor]] | None = None  # (key, weights) cache

    def mixture(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_head, p_ffn) of ``epoch`` (default: the current one); "once" always uses epoch 0's."""
        epoch = self.epoch if epoch is None else epoch
        pool = self.group("pool")
        return mixture_weights(self.distribution, layers=pool["q.weight"].shape[0], heads=self.learngene_heads,
                               ancestry_heads=pool["q.weight"].shape[1], ancestry_layers=pool["fc1.weight"].shape[0],
                               seed=self.seed, epoch=epoch if self.resample == "epoch" else 0)

    def learngene_layers(self) -> Tensors:
        pool = self.group("pool")
        like = pool["q.weight"]
        key = (self.epoch if self.resample == "epoch" else 0, like.device, like.dtype)
        if self._on_device is None or self._on_device[0] != key:  # one draw and copy per epoch, not per step
            self._on_device = (key, tuple(p.to(like) for p in self.mixture()))
        return sample_learngene(pool, *self._on_device[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.epoch = self._train_forwards // max(1, self.steps_per_epoch)
            self._train_forwards += 1
        return super().forward(x)


# -- extraction -------------------------------------------------------------------------------
def resolve_shape(config: PegConfig, ancestry_arch: ViTArch) -> tuple[int, int]:
    """(L_b, H_b) for this ancestry: the config's, or the paper's defaults; checked."""
    l_a, h_a = ancestry_arch.depth, ancestry_arch.num_heads
    l_b = config.learngene_layers or default_learngene_layers(l_a)
    h_b = config.learngene_heads or default_learngene_heads(h_a)
    if l_b > l_a:
        raise ConfigError(f"peg learngene_layers={l_b} exceeds the ancestry's {l_a} layers; choose <= {l_a}")
    if h_b > h_a:
        raise ConfigError(f"peg learngene_heads={h_b} exceeds the ancestry's {h_a} heads; choose <= {h_a}")
    return l_b, h_b


def extract(ancestry: VisionTransformer, config: PegConfig, data: Any = None) -> Artifact:
    """Sample the PEG learngene from ``ancestry`` and condense it by distillation on ``data``."""
    if config.epochs > 0 and data is None:
        raise ConfigError("peg condenses its learngene by distillation and needs data: pass data='fashion-mnist' "
                          "(or epochs=0 for one draw of the mixture without training)")
    arch = arch_of(ancestry)
    if config.epochs > 0 and arch.num_classes < 1:
        raise ConfigError("peg distils the ancestry's logits, but this ancestry has no classifier (num_classes=0); "
                          "use epochs=0")
    l_b, h_b = resolve_shape(config, arch)
    config = dataclasses.replace(config, learngene_layers=l_b, learngene_heads=h_b)  # stored resolved
    stack = to_stack(ancestry).clone()  # own copies: the ancestry is never modified
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        maps = PegMaps(l_b, stack.depth, h_b, stack.num_heads, config.map_form)
    condenser = PegCondenser(arch, pool=ancestry_pool(stack, l_b), stem=stack.stem, head=stack.head, maps=maps,
                             learngene_heads=h_b, distribution=config.distribution, resample=config.resample,
                             seed=config.seed)
    provenance: dict[str, Any] = {"cost": {"samples_seen": 0, "flops": 0.0}}
    summary: dict[str, Any] = {}
    if config.epochs > 0:
        train_data, eval_data = split_holdout(data, config.holdout, config.seed)
        condenser.steps_per_epoch = len(train_data) // config.batch_size  # fit drops the last partial batch
        result, summary = distill_from_ancestry(condenser, ancestry, train_data, eval_data, config)
        summary["history"] = result.history
        provenance["cost"] = {"samples_seen": int(result.samples_seen), "flops": float(result.train_flops)}
    condenser.epoch = config.epochs - 1 if config.epochs > 0 else 0  # the stored draw: the last epoch's
    p_head, p_ffn = condenser.mixture()
    with torch.no_grad():
        layers = {k: v.detach().cpu() for k, v in condenser.learngene_layers().items()}
    tensors = {**pack("layers", layers),
               **pack("stem", {k: v.cpu() for k, v in condenser.group("stem").items()}),
               **pack("head", {k: v.cpu() for k, v in condenser.group("head").items()}),
               **pack("maps", {k: v.cpu() for k, v in condenser.maps.state_dict().items()})}
    provenance["peg"] = {
        "aux_arch": arch.to_dict(),
        "matched_layers": matched_layers(stack.depth, l_b),
        "mixture": {"epoch": condenser.epoch if config.resample == "epoch" else 0,
                    "heads": p_head.tolist(), "ffn": p_ffn.tolist()},
        "distillation": summary,
    }
    return Artifact(method="peg", config=config_to_dict(config), tensors=tensors, provenance=provenance)


# -- descendants --------------------------------------------------------------------------------
def _stacked_extra(target: VitStack, have: int) -> Tensors:
    """The timm-initialised dims ``have:`` of every head of ``target``, stacked over its layers."""
    extra = {}
    for key in HEAD_AXIS:
        if key in target.blocks[0]:
            axis = DIM_AXIS[key]
            extra[key] = torch.stack([b[key].narrow(axis, have, b[key].shape[axis] - have) for b in target.blocks])
    return extra


def expand_trainable(gene: Artifact, arch: ViTArch | None = None, *, seed: int | None = None,
                     **shape: Any) -> PegDescendant:
    """A trainable PEG descendant: train it with ``learngene.train.fit``, then ``fold`` it.

    ``arch``: the descendant's full timm kwargs; or leave it out and give ``depth``,
    ``num_heads``, ``num_classes``... (the ancestry's otherwise). ``seed`` fixes the
    random initialisation of what the learngene does not give.
    """
    if arch is None:
        arch = gene.descendant_arch(**shape)
    elif shape:
        raise ConfigError("give either arch or shape keywords (depth=..., num_heads=...), not both")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return _build(gene, arch)


def _build(gene: Artifact, arch: ViTArch) -> PegDescendant:
    return PegDescendant(arch, **_parts(gene, arch))


def _parts(gene: Artifact, arch: ViTArch) -> dict[str, Any]:
    """What a descendant of ``arch`` starts from: the learngene's layers (the stored tensors,
    not copies), its maps (condensed or fresh), stem, head and extra head dims."""
    ancestry = gene.ancestry_arch
    layers = unpack("layers", gene.tensors)
    l_b, h_b, hd_b, d = layers["q.weight"].shape
    hidden = layers["fc1.weight"].shape[1]
    if arch.embed_dim != d:
        raise ConfigError(f"peg keeps the ancestry's width: embed_dim must be {d}, got {arch.embed_dim} "
                          "(vary depth and num_heads; for a narrower model use weight-selection)")
    # Placeholders (no memory, no draws): the blocks are built from the learngene; only the stem and
    # head, and the blocks' extra head dims when the descendant's heads are wider, are drawn fresh.
    target = blank_stack(arch)
    if target.mlp_hidden != hidden:
        raise ConfigError(f"peg keeps the ancestry's MLP width {hidden}: mlp_ratio must be {hidden / d:g}, "
                          f"got {arch.mlp_ratio}")
    if set(target.blocks[0]) != set(layers):
        raise ConfigError(f"the learngene's layers hold {sorted(layers)} but the descendant expects "
                          f"{sorted(target.blocks[0])}: keep the ancestry's qkv_bias and layer-scale (init_values)")
    l_d, h_d, hd_d = target.depth, target.num_heads, target.head_dim
    maps = PegMaps(l_b, l_d, h_b, h_d, gene.config.get("map_form", "split"))
    stored = unpack("maps", gene.tensors)
    if l_d == ancestry.depth:  # the condensed maps fit: start from them
        reuse = ("layer_attn.", "layer_ffn.") + (("head_",) if h_d == ancestry.num_heads else ())
        maps.load_state_dict({**maps.state_dict(), **{k: v for k, v in stored.items() if k.startswith(reuse)}})
    materialize(target, blocks=hd_d > hd_b)
    extra = _stacked_extra(target, hd_b) if hd_d > hd_b else None
    target.stem.update(fit_stem(unpack("stem", gene.tensors), ancestry, arch))
    copy_head_if_same_labels(target, unpack("head", gene.tensors), ancestry)
    return dict(layers=layers, stem=target.stem, head=target.head, maps=maps, extra=extra)


def fold(descendant: PegDescendant) -> VisionTransformer:
    """The plain timm VisionTransformer that computes exactly what ``descendant`` computes."""
    return fold_computed(descendant)


def expand(gene: Artifact, arch: ViTArch) -> VisionTransformer:
    """A timm ViT of ``arch``: the PEG descendant with its maps at their start values, folded.

    Start values: the condensed maps when the shape is the auxiliary one, else the
    interpolation init (``map_form="split"``) or a random one (``"paper"``). To train the
    maps with the descendant, use ``expand_trainable`` + ``learngene.train.fit`` + ``fold``.

    The same numbers as ``fold(expand_trainable(gene, arch))``, computed straight from the
    learngene's tensors (no trainable module, so no copy of them) and handed to the model
    uncopied: about one model of memory at the peak.
    """
    parts = _parts(gene, arch)
    head_dim = arch.embed_dim // arch.num_heads
    with torch.no_grad():
        blocks = expand_layers(parts["layers"], parts["maps"], head_dim, parts["extra"])
    stack = VitStack(arch=arch, stem=parts["stem"], blocks=blocks, head=parts["head"])
    return from_stack(stack, consume=True, protect=gene.tensors.values())


# -- the artifact --------------------------------------------------------------------------------
def validate(gene: Artifact) -> None:
    """Every stored tensor has the shape the config and the ancestry imply."""
    cfg, a = gene.config, gene.ancestry_arch
    l_b, h_b = cfg.get("learngene_layers"), cfg.get("learngene_heads")
    if not isinstance(l_b, int) or not isinstance(h_b, int):
        raise ConfigError("the config must hold the resolved learngene_layers and learngene_heads")
    d, h_a, l_a = a.embed_dim, a.num_heads, a.depth
    hd = d // h_a
    prefixes = {k.split(".", 1)[0] for k in gene.tensors}
    if prefixes - {"layers", "stem", "head", "maps"}:
        raise ConfigError(f"unexpected tensors under {sorted(prefixes - {'layers', 'stem', 'head', 'maps'})}")
    layers = unpack("layers", gene.tensors)
    for key in ("norm1.weight", "q.weight", "k.weight", "v.weight", "proj.weight", "proj.bias", "norm2.weight",
                "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        if key not in layers:
            raise ConfigError(f"layers.{key} is missing")
    f = layers["fc1.weight"].shape[1] if layers["fc1.weight"].dim() == 3 else -1
    expected = {"q.weight": (l_b, h_b, hd, d), "k.weight": (l_b, h_b, hd, d), "v.weight": (l_b, h_b, hd, d),
                "q.bias": (l_b, h_b, hd), "k.bias": (l_b, h_b, hd), "v.bias": (l_b, h_b, hd),
                "proj.weight": (l_b, d, h_b, hd), "fc1.weight": (l_b, f, d), "fc1.bias": (l_b, f),
                "fc2.weight": (l_b, d, f)}
    for key, t in layers.items():
        want = expected.get(key, (l_b, d))
        if tuple(t.shape) != want:
            raise ConfigError(f"layers.{key} has shape {tuple(t.shape)}, expected {want}")
    if f != int(d * a.mlp_ratio):
        raise ConfigError(f"the learngene's MLP width {f} is not the ancestry's embed_dim x mlp_ratio")
    for name in ("stem.patch.weight", "stem.pos_embed"):
        if name not in gene.tensors or gene.tensors[name].shape[0 if name.endswith("weight") else -1] != d:
            raise ConfigError(f"{name} is missing or not {d} wide")
    with torch.device("meta"):
        want_maps = {k: tuple(v.shape) for k, v in
                     PegMaps(l_b, l_a, h_b, h_a, cfg.get("map_form", "split")).state_dict().items()}
    have_maps = {k: tuple(v.shape) for k, v in unpack("maps", gene.tensors).items()}
    if want_maps != have_maps:
        raise ConfigError(f"the stored maps do not fit {l_b} -> {l_a} layers and {h_b} -> {h_a} heads "
                          f"(map_form={cfg.get('map_form')})")


def describe_shapes(gene: Artifact) -> str:
    a, cfg = gene.ancestry_arch, gene.config
    d = a.embed_dim
    return (f"any depth >= 1 and num_heads dividing {d} (learngene: {cfg['learngene_layers']} layers x "
            f"{cfg['learngene_heads']} heads of {d // int(a.num_heads)}; condensed maps reused at depth "
            f"{a.depth}, {a.num_heads} heads); embed_dim {d} and mlp_ratio {a.mlp_ratio} fixed; "
            f"head kept when num_classes = {a.num_classes}")
