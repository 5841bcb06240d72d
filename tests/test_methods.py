"""Shared properties of every registered method, over one table, plus method specifics."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import learngene
from learngene.errors import ConfigError, UnknownMethodError
from learngene.arch import arch_of
from learngene.registry import get_method
from learngene.stack import to_stack

from conftest import randomize_, tiny_vit

HAS_CLIP = all(importlib.util.find_spec(m) is not None for m in ("open_clip", "transformers"))

# State-dict keys of a timm ViT that timm's init draws at random (biases, norms and layer-scales
# are constants): what a seed may change in a descendant.
ANY = r"\d+"
DRAWN = r"(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight"
STEM = r"cls_token|pos_embed|patch_embed\.proj\.(weight|bias)"
HEAD = r"head\.weight"


def blocks(ids: str, keys: str = DRAWN) -> str:
    """The state-dict keys ``keys`` of blocks ``ids`` (regexes: "0", "[1-4]", ANY)."""
    return rf"blocks\.({ids})\.{keys}"


@dataclass(frozen=True, eq=False)
class Case:
    """One row of the table: a method, options that make its extraction take about a second,
    and a descendant it must grow.

    data:       what extraction reads: None, "images" (28x28 grey, 10 classes) or "captions"
                (image-caption pairs; the ancestry is then a tiny CLIP, as the registry's
                ``ancestry_kind`` says; else a tiny timm ViT: depth 4, width 48, 3 heads of 16).
    shape:      the descendant: ``gene.expand``'s keywords, or for stitched descendants
                ``stitch_supernet``'s.
    descendant: "vit": ``expand`` grows a plain timm VisionTransformer;
                "stitched": ``expand`` refuses; the method package's ``stitch_supernet`` grows
                StitchedViT descendants (a narrow prefix + Linear + a wide suffix);
                "clip": ``expand`` grows the image tower as a timm ViT classifier, and the
                package's ``expand_clip`` whole CLIPs.
    fresh:      regexes of exactly the state-dict keys the seed draws; everything else is the
                learngene's, the same for every seed. Empty: the learngene provides everything.
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    shape: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    descendant: str = "vit"
    fresh: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        words = [f"{k}={v}" for k, v in self.options.items() if k in ("rule", "k", "layers", "criterion",
                                                                       "selection", "epochs")]
        return ",".join([self.method, *words]) + ">" + ",".join(f"{k}={v}" for k, v in self.shape.items())


TRAIN = dict(epochs=1, batch_size=16, warmup_epochs=0.0)  # one epoch of 4 steps over the 64 images
QKV_PROJ = blocks(ANY, r"attn\.(qkv|proj)\.weight")

METHODS = [
    Case("scratch", shape=dict(depth=2, embed_dim=32, num_heads=2), fresh=(STEM, blocks(ANY), HEAD)),
    Case("pretrain-finetune"),
    Case("pretrain-finetune", shape=dict(num_classes=7), fresh=(HEAD,)),
    Case("heuristic", dict(rule="last", k=2), dict(depth=3), fresh=(blocks("0"), HEAD)),
    Case("heuristic", dict(rule="first", k=1), dict(depth=5), fresh=(blocks("[1-4]"), HEAD)),
    Case("heuristic", dict(layers=[0, 3]), dict(depth=6), fresh=(blocks("[1-4]"), HEAD)),
    Case("auto-learngene", dict(criterion="first-half"), dict(depth=3), fresh=(blocks("2"), HEAD)),
    Case("auto-learngene", dict(criterion="similarity", k=2, probe_size=32), dict(depth=3), data="images",
         fresh=(blocks("0"), HEAD)),
    Case("auto-learngene", dict(criterion="gradient", k=2, num_tasks=1, grad_steps=2, batch_size=8), dict(depth=3),
         data="images", fresh=(blocks("0"), HEAD)),
    Case("weight-selection", shape=dict(depth=2, embed_dim=24, num_heads=3), fresh=(HEAD,)),
    Case("weight-selection", dict(selection="head-aware", keep_head=True), dict(depth=3, embed_dim=32, num_heads=2)),
    Case("mimetic", shape=dict(depth=2, embed_dim=32, num_heads=2), fresh=(STEM, blocks(ANY), HEAD)),
    # 2 heads of 24 dims grown from heads of 16: the 8 extra dims of each head are drawn
    Case("peg", dict(epochs=0), dict(depth=3, num_heads=2), fresh=(QKV_PROJ,)),
    Case("peg", dict(lr=2e-3, **TRAIN), dict(depth=3, num_heads=2, num_classes=7), data="images",
         fresh=(QKV_PROJ, HEAD)),
    Case("tleg", dict(aux_depth=4, lr=2e-3, **TRAIN), dict(depth=3), data="images"),
    Case("tleg", dict(aux_depth=4, lr=2e-3, **TRAIN), dict(depth=5, num_classes=7), data="images", fresh=(HEAD,)),
    # narrower than the learngene (2 heads of 16 from 3, MLP 128 from 192): head-aware selection
    Case("tleg", dict(aux_depth=4, lr=2e-3, **TRAIN), dict(depth=2, embed_dim=32, num_heads=2), data="images"),
    # 2 heads of 16 from the 3 of the auxiliary model: whole template blocks; that size's scalers trained
    Case("wave", dict(lr=2e-3, sizes=[[2, 32, 2]], scaler_samples=32, **TRAIN), dict(depth=2, embed_dim=32, num_heads=2),
         data="images"),
    Case("wave", dict(init="ancestry", epochs=0, num_templates=4), dict(depth=5, num_classes=7), data="images",
         fresh=(HEAD,)),
    # untrained (epochs=0) and distilled learngenes; descendants shallower/deeper than the
    # learngene and narrower than the auxiliary model (rows of the matrices); classifier kept
    Case("lets", dict(epochs=0, aux_depth=6), dict(depth=5, embed_dim=32, num_heads=2)),
    Case("lets", dict(selection="l2-top", lr=2e-3, **TRAIN), dict(depth=3, num_classes=7), data="images",
         fresh=(HEAD,)),
    # 4 heads from the 3 representatives per layer: the 4th shares one, with noise on its q/k/v
    Case("cluster-learngene", dict(sample_size=8), dict(depth=3, num_heads=4), data="images",
         fresh=(blocks(ANY, r"attn\.qkv\.(weight|bias)"), HEAD)),
    Case("learngene-pool", dict(widths=[24, 48], depth=2, **TRAIN), dict(num_classes=7), data="images",
         descendant="stitched", fresh=(r"anchors\.\d+\.head\.weight",)),
    Case("learngene-pool", dict(widths=[24, 48], depth=2, epochs=0), descendant="stitched"),
    Case("sn-net", dict(widths=[24, 48], depth=2, **TRAIN), dict(init="random"), data="images",
         descendant="stitched", fresh=(r"stitch_layers\..*",)),
    # stages 1, 2, 1: depth 3 gives one layer per stage, depth 6 adds to the smallest (earliest) stages
    Case("sws", dict(stages=[1, 2, 1], lr=2e-3, **TRAIN), dict(depth=3), data="images"),
    Case("sws", dict(stages=[1, 2, 1], lr=2e-3, **TRAIN), dict(depth=6, num_classes=7), data="images", fresh=(HEAD,)),
    # narrower than the learngene by tleg's rule (2 heads of 16 from 3, MLP 128 from 192); stages 2, 2, 1
    Case("sws", dict(stages=[1, 2, 1], lr=2e-3, **TRAIN), dict(depth=5, embed_dim=32, num_heads=2), data="images"),
    Case("mm-lg", dict(num_layers=2, batch_size=16), dict(depth=3, num_classes=7), data="captions",
         descendant="clip", fresh=(HEAD,)),
]


def params(cases: list[Case]) -> list:
    skip_clip = pytest.mark.skipif(not HAS_CLIP, reason="open_clip_torch / transformers are not installed")
    return [pytest.param(c, id=c.id, marks=[skip_clip] if c.data == "captions" else []) for c in cases]


@functools.cache
def dataset(kind: str):
    g = torch.Generator().manual_seed(1)
    if kind == "images":
        return torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28, generator=g),
                                              torch.randint(0, 10, (64,), generator=g))
    from learngene.clip import CaptionTokenizer, caption_pairs
    from learngene.clip.data import all_captions

    names = [str(i) for i in range(10)]
    tokenizer = CaptionTokenizer.fit([c for c, _, _ in all_captions(names)], context_length=16)
    return caption_pairs(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g), names,
                         tokenizer)


def tiny_clip():
    """Towers of width 24, 2 heads; 3 image blocks on 8x8 images in patches of 4, 2 text blocks."""
    from learngene.clip import build_open_clip, clip_arch

    vocab = int(dataset("captions").tokens.max()) + 1
    arch = clip_arch(dict(embed_dim=16, image=dict(image_size=8, patch_size=4, in_chans=3, width=24, layers=3, heads=2),
                          text=dict(context_length=16, vocab_size=vocab, width=24, layers=2, heads=2)))
    torch.manual_seed(0)
    return build_open_clip(arch)


_GENES: dict[str, learngene.Learngene] = {}


def extracted(case: Case) -> learngene.Learngene:
    """The row's learngene, extracted once per session (tests only read it)."""
    if case.id not in _GENES:
        clip = get_method(case.method).ancestry_kind == "clip"
        ancestry = tiny_clip() if clip else randomize_(tiny_vit())
        data = dataset(case.data) if case.data else None
        _GENES[case.id] = learngene.extract(case.method, ancestry, data=data, **case.options)
    return _GENES[case.id]


def package(case: Case):
    return importlib.import_module(f"learngene.methods.{case.method.replace('-', '_')}")


def grow(case: Case, gene: learngene.Learngene, seed: int) -> torch.nn.Module:
    """The row's descendant: a timm ViT, or for stitched methods the supernet of all of them."""
    if case.descendant == "stitched":
        return package(case).stitch_supernet(gene, seed=seed, **case.shape)
    return gene.expand(seed=seed, **case.shape)


def images_for(gene: learngene.Learngene) -> torch.Tensor:
    arch = gene.ancestry_arch
    return torch.randn(2, arch.in_chans, *arch.img_hw)


def test_the_table_covers_every_registered_method():
    assert {c.method for c in METHODS} == set(learngene.list_methods())
    assert len({c.id for c in METHODS}) == len(METHODS)
    for case in METHODS:
        assert (case.descendant == "clip") == (get_method(case.method).ancestry_kind == "clip"), case.id
        assert (case.data == "captions") == (case.descendant == "clip"), case.id
        assert case.descendant in ("vit", "stitched", "clip"), case.id


def test_unknown_method_lists_valid_ones():
    with pytest.raises(UnknownMethodError, match="choose one of: .*heuristic"):
        learngene.extract("no-such-method", tiny_vit())


@pytest.mark.parametrize("case", params(METHODS))
def test_descendants_are_what_the_table_says(case):
    """A plain timm ViT (any timm VisionTransformer of its kwargs loads its state dict), or
    stitched models each computing what its supernet configuration computes; CLIPs for mm-lg."""
    gene = extracted(case)
    x = images_for(gene)
    classes = case.shape.get("num_classes", gene.ancestry_arch.num_classes)
    if case.descendant == "stitched":
        from learngene.methods.learngene_pool import StitchedViT

        with pytest.raises(ConfigError, match="stitch_supernet"):
            gene.expand(seed=0)
        supernet = grow(case, gene, seed=0).eval()
        assert supernet.num_configs > 2  # the anchors and stitched configurations
        for i in range(supernet.num_configs):
            model = supernet.export(i).eval()
            assert type(model) is StitchedViT
            with torch.no_grad():
                out = model(x)
                torch.testing.assert_close(out, supernet.select(i)(x), rtol=1e-5, atol=1e-5)
            assert out.shape == (2, classes)
        return
    model = grow(case, gene, seed=0)
    assert type(model) is VisionTransformer
    twin = VisionTransformer(**arch_of(model).timm_kwargs())
    twin.load_state_dict(model.state_dict())
    assert model(x).shape == (2, classes)
    assert len(model.blocks) == case.shape.get("depth", gene.ancestry_arch.depth)
    if case.descendant == "clip":
        clip = package(case).expand_clip(gene, image_layers=2, text_layers=1)
        assert type(clip).__name__ == "CLIP" and len(clip.visual.transformer.resblocks) == 2


@pytest.mark.parametrize("case", params([c for c in METHODS if c.descendant != "stitched"]))
def test_expand_is_the_fold_of_the_trainable_descendant(case):
    """``expand(trainable=True)`` + ``fold`` gives ``expand``'s weights bit for bit: the
    trainable module for methods that register one (maps trained with the descendant), the
    plain ViT itself for the others."""
    gene = extracted(case)
    trainable = gene.expand(seed=3, trainable=True, **case.shape)
    folded = gene.fold(trainable)
    assert (folded is trainable) == (get_method(case.method).fold is None)
    want, got = grow(case, gene, seed=3).state_dict(), folded.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("case", params(METHODS))
def test_save_load_round_trip(case, tmp_path):
    gene = extracted(case)
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.method == gene.method and loaded.config == gene.config
    assert loaded.num_parameters == gene.num_parameters
    assert loaded.tensors.keys() == gene.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], gene.tensors[k]) for k in gene.tensors)
    a = grow(case, gene, seed=3).state_dict()
    b = grow(case, loaded, seed=3).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", params(METHODS))
def test_expand_seed_controls_fresh_init(case):
    """The same seed grows the same weights; another seed redraws exactly the row's ``fresh``
    tensors (so the seed is used, and never reaches what the learngene provides)."""
    gene = extracted(case)
    a, again, b = (grow(case, gene, seed).state_dict() for seed in (1, 1, 2))
    assert all(torch.equal(a[k], again[k]) for k in a)
    for pattern in case.fresh:
        assert any(re.fullmatch(pattern, k) for k in a), f"{pattern!r} matches no key of {sorted(a)}"
    fresh = {k for k in a if any(re.fullmatch(p, k) for p in case.fresh)}
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == fresh, (f"redrawn but not fresh: {sorted(changed - fresh)}; "
                              f"fresh but not redrawn: {sorted(fresh - changed)}")


def test_heuristic_three_of_twelve_stores_exactly_those_blocks(ancestry):
    """vit-mini, k=3 last layers: stored = 3 blocks + the stem, and nothing else."""
    stack = to_stack(ancestry)
    gene = learngene.extract("heuristic", ancestry, rule="last", k=3)
    expected = sum(stack.num_parameters_of_block(i) for i in (9, 10, 11)) if hasattr(stack, "num_parameters_of_block") \
        else sum(t.numel() for i in (9, 10, 11) for t in stack.blocks[i].values())
    expected += stack.num_parameters("stem")
    assert gene.num_parameters == expected
    assert gene.config["layers"] == [9, 10, 11]


def test_heuristic_descendant_carries_inherited_tensors_unchanged(ancestry):
    gene = learngene.extract("heuristic", ancestry, rule="last", k=3)
    child = gene.expand(depth=6, num_classes=5, seed=0)
    parent, kid = to_stack(ancestry), to_stack(child)
    # rule "last": ancestry layers 9, 10, 11 sit at descendant positions 3, 4, 5
    for layer, position in zip((9, 10, 11), (3, 4, 5)):
        for key, tensor in parent.blocks[layer].items():
            assert torch.equal(kid.blocks[position][key], tensor), (layer, key)
    for key in ("patch.weight", "patch.bias", "pos_embed", "cls_token"):
        assert torch.equal(kid.stem[key], parent.stem[key])
    # fresh layers are not copies of any ancestry layer
    assert not any(torch.equal(kid.blocks[0]["fc1.weight"], b["fc1.weight"]) for b in parent.blocks)


def test_heuristic_spread_places_layers_by_relative_depth(ancestry):
    from learngene.methods._indices import place_layers

    assert place_layers([0, 5, 11], "spread", 12, 12) == [0, 5, 11]
    assert place_layers([0, 5, 11], "spread", 12, 6) == [0, 2, 5]
    assert place_layers([0, 1, 2], "spread", 12, 3) == [0, 1, 2]
    assert place_layers([9, 10, 11], "last", 12, 4) == [1, 2, 3]


@pytest.mark.parametrize("options,positions", [
    (dict(rule="first", k=2), [0, 1]),
    (dict(rule="last", k=2), [4, 5]),
    (dict(rule="spread", k=2), [0, 5]),   # ancestry layers 0 and 3 of 4, by relative depth
    (dict(layers=[1, 2]), [2, 3]),        # round(1 * 5 / 3), round(2 * 5 / 3)
    (dict(layers=[1, 2, 3]), [2, 3, 5]),  # explicit layers spread, even the ones the default rule picks
])
def test_heuristic_places_layers_by_its_rule_in_a_deeper_descendant(options, positions):
    """Depth 6 from a depth-4 ancestry: where each inherited block lands, found by its weights."""
    ancestry = randomize_(tiny_vit())
    gene = learngene.extract("heuristic", ancestry, **options)
    parent, kid = to_stack(ancestry), to_stack(gene.expand(depth=6, seed=0))
    found = [p for layer in gene.config["layers"] for p in range(6)
             if torch.equal(kid.blocks[p]["fc1.weight"], parent.blocks[layer]["fc1.weight"])]
    assert found == positions


@pytest.mark.parametrize("options,match", [
    (dict(rule="middle"), "rule must be one of"),
    (dict(k=0), "k must be a positive integer"),
    (dict(layers=[0, 0]), "duplicates"),
    (dict(layers=[40]), r"layers \[40\] do not exist"),
    (dict(k=13), "only 12 layers"),
    (dict(nonsense=1), "has no option 'nonsense'"),
])
def test_heuristic_bad_options(ancestry, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("heuristic", ancestry, **options)


@pytest.mark.parametrize("shape,match", [
    (dict(depth=0), "depth must be a positive integer"),
    (dict(depth=-3), "depth must be a positive integer"),
    (dict(embed_dim=50, num_heads=3), "not divisible by num_heads"),
    (dict(depth=2), "needs depth >= 3"),
    (dict(embed_dim=48, num_heads=3), "embed_dim must be the ancestry's"),
])
def test_heuristic_bad_shapes(ancestry, shape, match):
    gene = learngene.extract("heuristic", ancestry, k=3)
    with pytest.raises(ConfigError, match=match):
        gene.expand(**shape)


def test_pretrain_finetune_rebuilds_the_ancestry(ancestry):
    gene = learngene.extract("pretrain-finetune", ancestry)
    assert gene.num_parameters == sum(p.numel() for p in ancestry.parameters())
    child = gene.expand()
    a, b = ancestry.state_dict(), child.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    new_head = gene.expand(num_classes=3, seed=0)
    assert new_head.head.weight.shape == (3, 96)
    with pytest.raises(ConfigError, match="can only rebuild the ancestry"):
        gene.expand(depth=6)


def test_stem_adapts_to_new_grid_and_channels(ancestry):
    gene = learngene.extract("heuristic", ancestry, k=2)
    child = gene.expand(img_size=56, in_chans=3, num_classes=4, seed=0)
    assert child.pos_embed.shape == (1, 1 + 64, 96)
    assert child(torch.randn(1, 3, 56, 56)).shape == (1, 4)


def test_scratch_stores_nothing(ancestry):
    gene = learngene.extract("scratch", ancestry)
    assert gene.num_parameters == 0
    assert gene.expand(depth=2, embed_dim=24, num_heads=2, num_classes=3).embed_dim == 24


def test_scratch_avg_pool_is_tlegs_head_and_survives_a_save(ancestry, tmp_path):
    learngene.extract("scratch", ancestry, pool="avg").save(tmp_path / "gene")
    child = learngene.load(tmp_path / "gene").expand(depth=2, num_classes=3)
    assert (child.global_pool, child.cls_token, child.has_class_token) == ("avg", None, False)
    assert isinstance(child.fc_norm, torch.nn.LayerNorm) and child.pos_embed.shape[1] == child.patch_embed.num_patches
    given = learngene.extract("scratch", ancestry).expand(depth=2, num_classes=3)
    assert given.global_pool == "token" and given.cls_token is not None
    with pytest.raises(ConfigError, match="pool"):
        learngene.extract("scratch", ancestry, pool="max")


def test_extract_does_not_modify_the_ancestry(ancestry):
    before = {k: v.clone() for k, v in ancestry.state_dict().items()}
    gene = learngene.extract("heuristic", ancestry, k=3)
    child = gene.expand(seed=0)
    with torch.no_grad():
        for p in child.parameters():
            p.add_(1.0)
    for key, value in ancestry.state_dict().items():
        assert torch.equal(value, before[key]), key
