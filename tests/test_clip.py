"""CLIP support: exact adapters (open_clip, transformers), captions, InfoNCE, fit's loss_fn, timm image tower."""

import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed (pip install 'learngene-kit[clip]')")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'learngene-kit[clip]')")

from learngene.clip import (CaptionTokenizer, build_hf_clip, build_open_clip, caption_pairs, clip_arch, clip_loss,  # noqa: E402
                            evaluate_clip, hf_to_stack, image_tower_to_timm, load_clip_ancestry, open_clip_to_stack,
                            save_clip_ancestry, stack_to_hf, stack_to_open_clip, train_clip)
from learngene.clip.data import all_captions  # noqa: E402
from learngene.errors import ConfigError  # noqa: E402
from learngene.train import TrainConfig, fit  # noqa: E402

ARCHS = [
    dict(embed_dim=16, act="gelu", image=dict(image_size=8, patch_size=4, in_chans=3, width=24, layers=2, heads=2),
         text=dict(context_length=8, vocab_size=30, width=24, layers=1, heads=3)),
    dict(embed_dim=8, act="quick_gelu", image=dict(image_size=16, patch_size=8, in_chans=3, width=32, layers=1, heads=4,
                                                   mlp_ratio=2.0),
         text=dict(context_length=6, vocab_size=20, width=16, layers=2, heads=2)),
]


def _equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _tokens(arch, n=3):
    V, S = arch["text"]["vocab_size"], arch["text"]["context_length"]
    t = torch.randint(2, V - 2, (n, S), generator=torch.Generator().manual_seed(1))
    t[:, 0] = V - 2
    t[:, S // 2] = V - 1  # end of text
    t[:, S // 2 + 1:] = 0
    return t


@pytest.mark.parametrize("arch", ARCHS)
def test_open_clip_round_trip_is_bitwise(arch):
    torch.manual_seed(0)
    model = build_open_clip(arch)
    stack = open_clip_to_stack(model)
    assert stack.arch == clip_arch(arch)
    assert _equal_states(model, stack_to_open_clip(stack))
    assert stack.num_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_hf_round_trip_is_bitwise_and_matches_open_clip(arch):
    torch.manual_seed(0)
    hf = build_hf_clip(arch)
    assert _equal_states(hf, stack_to_hf(hf_to_stack(hf)))
    # open_clip -> canonical -> transformers: the same function (and back, bitwise)
    oc = build_open_clip(arch).eval()
    hf2 = stack_to_hf(open_clip_to_stack(oc))
    assert _equal_states(oc, stack_to_open_clip(hf_to_stack(hf2)))
    x = torch.randn(2, 3, arch["image"]["image_size"], arch["image"]["image_size"])
    tokens = _tokens(arch)
    with torch.no_grad():
        img = hf2.get_image_features(pixel_values=x)
        txt = hf2.get_text_features(input_ids=tokens)
        img = img if torch.is_tensor(img) else img.pooler_output
        txt = txt if torch.is_tensor(txt) else txt.pooler_output
        torch.testing.assert_close(img, oc.encode_image(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(txt, oc.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_adapters_refuse_unmapped_layouts():
    with pytest.raises(ConfigError, match="in_chans"):
        build_open_clip({**ARCHS[0], "image": {**ARCHS[0]["image"], "in_chans": 1}})
    with pytest.raises(ConfigError, match="divisible"):
        clip_arch({**ARCHS[0], "text": {**ARCHS[0]["text"], "heads": 5}})
    with pytest.raises(ConfigError, match="open_clip.CLIP"):
        open_clip_to_stack(torch.nn.Linear(2, 2))


def test_clip_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    scale = torch.tensor(7.0)
    loss, logits, targets = clip_loss(img, txt, scale)
    total = 0.0
    for i in range(3):  # -log softmax of the matching pair, both directions, by hand
        row = [7.0 * float(img[i] @ txt[j]) for j in range(3)]
        col = [7.0 * float(txt[i] @ img[j]) for j in range(3)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -col[i] + math.log(sum(math.exp(v) for v in col))
    assert abs(float(loss) - total / 6) < 1e-5
    assert targets.tolist() == [0, 1, 2] and logits.shape == (3, 3)
    clamped, _, _ = clip_loss(img, txt, torch.tensor(1e4))  # the scale is clamped at 100
    hundred, _, _ = clip_loss(img, txt, torch.tensor(100.0))
    assert torch.equal(clamped, hundred)


def test_tokenizer_compact_vocabulary_keeps_end_of_text_last():
    tok = CaptionTokenizer.fit(["a bright coat", "a dark bag"], context_length=8)
    ids = tok(["a bright coat", "a purple coat"])
    assert ids.shape == (2, 8)
    assert int(ids.max()) == tok.vocab_size - 1 == int(ids[0].max())  # EOT is the largest id
    assert 1 in ids[1].tolist() and 1 not in ids[0].tolist()  # "purple" is unknown


def _tiny_pairs(n=128):
    names = [str(i) for i in range(10)]
    tok = CaptionTokenizer.fit([c for c, _, _ in all_captions(names)], context_length=16)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return caption_pairs(images, labels, names, tok), tok


def test_captions_are_grounded_and_indexed():
    pairs, _ = _tiny_pairs()
    assert len(pairs.captions) == 10 * 4 * 3 and pairs.tokens.shape == (120, 16)
    assert torch.equal(pairs.caption_class[pairs.caption_ids], pairs.labels)
    for i in range(5):
        name = ("zero one two three four five six seven eight nine".split())[int(pairs.labels[i])]
        assert name in pairs.captions[int(pairs.caption_ids[i])]


def test_contrastive_training_through_fit_and_ancestry_folder(tmp_path):
    pairs, tok = _tiny_pairs()
    arch = clip_arch(dict(embed_dim=16, image=dict(image_size=8, patch_size=4, in_chans=3, width=24, layers=1, heads=2),
                          text=dict(context_length=16, vocab_size=tok.vocab_size, width=24, layers=1, heads=2)))
    torch.manual_seed(0)
    model = build_open_clip(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_clip(model, pairs, TrainConfig(epochs=2, batch_size=32, lr=1e-3, checkpoint=False))
    assert result.steps == 8 and math.isfinite(result.train_loss) and result.forward_flops_per_sample > 0
    assert not torch.equal(before["logit_scale"], model.state_dict()["logit_scale"])  # the temperature learns
    metrics = evaluate_clip(model, pairs)
    assert 0 <= metrics["zero_shot_acc"] <= 1 and metrics["r@5"] >= metrics["r@1"]
    save_clip_ancestry(open_clip_to_stack(model), tok, tmp_path / "anc")
    stack, tok2 = load_clip_ancestry(tmp_path / "anc")
    assert _equal_states(model, stack_to_open_clip(stack)) and tok2.vocab_ids == tok.vocab_ids
    with pytest.raises(ConfigError, match="teacher"):
        fit(model, pairs.pairs, config=TrainConfig(epochs=1, batch_size=32, distill="soft"), teacher=model,
            loss_fn=lambda m, x, y: None)


def test_image_tower_as_timm_vit_computes_the_clip_image_features():
    arch = ARCHS[0]
    torch.manual_seed(0)
    oc = build_open_clip(arch).eval()
    stack = open_clip_to_stack(oc)
    classes = torch.nn.functional.normalize(torch.randn(5, arch["embed_dim"]), dim=-1)
    vit = image_tower_to_timm(stack, 5, in_chans=1, class_embeddings=classes).eval()
    grey = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        clip_img = oc.encode_image(grey.expand(-1, 3, -1, -1))  # [4, E]
        features = vit.forward_head(vit.forward_features(grey), pre_logits=True)  # [4, D]
        torch.testing.assert_close(features @ stack.image.head["proj.weight"].t(), clip_img, atol=1e-4, rtol=1e-4)
        zero_shot = (torch.nn.functional.normalize(clip_img, dim=-1) @ classes.t()).argmax(1)
        assert torch.equal(vit(grey).argmax(1), zero_shot)
