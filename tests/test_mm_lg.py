"""mm-lg: the block rule, condensation's initialisation, extraction, artifact, CLIP and ViT descendants."""

import pytest
import torch

pytest.importorskip("open_clip", reason="open_clip_torch is not installed (pip install 'learngene-kit[clip]')")
pytest.importorskip("transformers", reason="transformers is not installed (pip install 'learngene-kit[clip]')")

import learngene  # noqa: E402
from learngene.clip import (CaptionTokenizer, build_open_clip, caption_pairs, clip_arch, hf_to_stack,  # noqa: E402
                            open_clip_to_stack)
from learngene.clip.data import all_captions  # noqa: E402
from learngene.errors import ConfigError  # noqa: E402
from learngene.methods.mm_lg import MmlgConfig, expand_clip, expand_text, extract_clip, mmlg_blocks  # noqa: E402
from learngene.methods.mm_lg.condense import build_stack  # noqa: E402
from learngene.methods.mm_lg.method import init_tensors, layer_of  # noqa: E402
from learngene.methods.mm_lg.tleg_towers import init_tensors as tleg_init, tleg_tower_blocks  # noqa: E402

NAMES = [str(i) for i in range(10)]
TOK = CaptionTokenizer.fit([c for c, _, _ in all_captions(NAMES)], context_length=16)


def _arch(image_layers=3, text_layers=2, text_width=24):
    return clip_arch(dict(embed_dim=16, image=dict(image_size=8, patch_size=4, in_chans=3, width=24, layers=image_layers,
                                                   heads=2),
                          text=dict(context_length=16, vocab_size=TOK.vocab_size, width=text_width,
                                    layers=text_layers, heads=2)))


@pytest.mark.parametrize("depth,K,expected", [(4, 2, [0, 0, 1, 1]), (3, 2, [0, 0, 1]), (5, 1, [0] * 5),
                                              (2, 2, [0, 1]), (6, 3, [0, 0, 1, 1, 2, 2])])
def test_layer_of_stretches_layers_in_order(depth, K, expected):
    assert [layer_of(l, depth, K) for l in range(depth)] == expected


def test_init_is_group_means_and_alpha_zero_gives_the_ancestry_back():
    torch.manual_seed(0)
    stack = open_clip_to_stack(build_open_clip(_arch(image_layers=2, text_layers=2)))
    t = init_tensors(stack, num_layers=2)
    for key in ("q.weight", "fc1.bias"):
        torch.testing.assert_close(t[f"mm.0.{key}"], (stack.image.blocks[0][key] + stack.text.blocks[0][key]) / 2)
    t["alpha.image"], t["alpha.text"] = torch.zeros(2), torch.zeros(2)  # unimodal only: K = depth -> exact ancestry
    rebuilt = build_stack(t, mmlg_blocks, stack.arch)
    for tower in ("image", "text"):
        for mine, theirs in zip(rebuilt.tower(tower).blocks, stack.tower(tower).blocks):
            assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    with pytest.raises(ConfigError, match="width"):
        init_tensors(open_clip_to_stack(build_open_clip(_arch(text_width=16))), 1)


def test_tleg_towers_init_recovers_linear_blocks():
    torch.manual_seed(0)
    stack = open_clip_to_stack(build_open_clip(_arch(image_layers=3)))
    a, b = stack.image.blocks[0], stack.image.blocks[1]
    stack.image.blocks = [{k: a[k] + (l / 3) * b[k] for k in a} for l in range(3)]  # exactly linear in l/L
    blocks = tleg_tower_blocks(tleg_init(stack), "image", 3)
    for mine, theirs in zip(blocks, stack.image.blocks):
        torch.testing.assert_close(mine["fc1.weight"], theirs["fc1.weight"], atol=1e-5, rtol=1e-5)


def test_extract_save_load_and_grow_every_kind_of_descendant(tmp_path):
    torch.manual_seed(0)
    ancestry = build_open_clip(_arch())
    g = torch.Generator().manual_seed(0)
    pairs = caption_pairs(torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g), NAMES, TOK)
    gene = extract_clip(ancestry, MmlgConfig(num_layers=2, batch_size=32), pairs)
    # stored: 2 shared + 2 + 2 unimodal blocks, 2 x 2 weights, the towers' ends, logit scale
    stack = open_clip_to_stack(ancestry)
    block = sum(t.numel() for t in stack.image.blocks[0].values())
    ends = stack.num_parameters() - sum(sum(t.numel() for t in b.values()) for b in stack.image.blocks + stack.text.blocks)
    assert gene.num_parameters == 6 * block + 4 + ends
    assert gene.provenance["cost"]["samples_seen"] == 64 and gene.provenance["cost"]["flops"] > 0
    gene.save(tmp_path / "g")
    loaded = learngene.load(tmp_path / "g")
    oc = expand_clip(loaded, image_layers=5, text_layers=1)
    hf = expand_clip(loaded, image_layers=5, text_layers=1, library="hf")
    assert type(oc).__name__ == "CLIP" and len(oc.visual.transformer.resblocks) == 5
    assert type(hf).__name__ == "CLIPModel" and hf.config.vision_config.num_hidden_layers == 5
    oc_block, hf_block = open_clip_to_stack(oc).image.blocks[4], hf_to_stack(hf).image.blocks[4]
    assert all(torch.equal(oc_block[k], hf_block[k]) for k in oc_block)
    vit = loaded.expand(depth=4, num_classes=10, in_chans=1)
    assert type(vit).__name__ == "VisionTransformer" and vit(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # The classifier is built from the image tower alone: its blocks are the CLIP descendant's, and
    # it shares no memory with the learngene.
    from learngene.stack import to_stack

    want, got = open_clip_to_stack(expand_clip(loaded, image_layers=4)).image.blocks, to_stack(vit).blocks
    assert all(torch.equal(got[i][k], want[i][k]) for i in range(4) for k in want[i])
    gene_storage = {t.untyped_storage().data_ptr() for t in loaded.tensors.values()}
    assert not gene_storage & {p.untyped_storage().data_ptr() for p in vit.parameters()}
    assert len(expand_text(loaded, 3).blocks) == 3
    with pytest.raises(ConfigError, match="embed_dim"):
        loaded.expand(depth=2, num_classes=10, embed_dim=48, num_heads=2)
    with pytest.raises(ConfigError, match="CLIP"):
        learngene.get_method("mm-lg").extract(None, MmlgConfig())
