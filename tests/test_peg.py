"""PEG (Wang et al., ICML 2024): mixture sampling, condensing, expansion maps, folding."""

from __future__ import annotations

import pytest
import timm
import torch

import learngene
import learngene.methods.peg  # noqa: F401  (registers the method)
from learngene.errors import ArtifactError, ConfigError
from learngene.methods.peg import (PAPER_SHAPES, PegCondenser, PegMaps, expand_trainable, fold, interpolation_matrix,
                                   mixture_weights, preset_options, sample_learngene)
from learngene.methods.peg.config import default_learngene_heads, default_learngene_layers
from learngene.methods.peg.maps import DIM_AXIS
from learngene.methods.peg.method import ancestry_pool, matched_layers
from learngene.stack import to_stack
from learngene.arch import arch_of
from learngene.train import TrainConfig, fit

from conftest import randomize_, tiny_vit


@pytest.fixture(scope="module")
def tiny_ancestry():
    torch.manual_seed(0)
    return randomize_(tiny_vit())  # depth 4, width 48, 3 heads of 16, MLP 192, 10 classes


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))


@pytest.fixture(scope="module")
def drawn(tiny_ancestry):
    """One draw of the mixture, no condensing: L_b = 2 layers of H_b = 2 heads."""
    return learngene.extract("peg", tiny_ancestry, epochs=0)


TRAIN = dict(epochs=2, batch_size=16, warmup_epochs=0.0, lr=2e-3, seed=0)


@pytest.fixture(scope="module")
def condensed(tiny_ancestry, data):
    """A real condensing run: 2 epochs x 3 steps of 16, distilling the tiny ancestry."""
    return learngene.extract("peg", tiny_ancestry, data=data, **TRAIN)


def layers_of(gene) -> dict[str, torch.Tensor]:
    return {k[len("layers."):]: v for k, v in gene.tensors.items() if k.startswith("layers.")}


def mixture_of(gene) -> tuple[torch.Tensor, torch.Tensor]:
    mix = gene.provenance["peg"]["mixture"]
    return torch.tensor(mix["heads"]), torch.tensor(mix["ffn"])


# -- shapes and options -------------------------------------------------------------------------
def test_paper_shapes_are_the_defaults(ancestry):
    for shape in PAPER_SHAPES.values():
        assert default_learngene_heads(shape["ancestry_heads"]) == shape["learngene_heads"]
        assert default_learngene_layers(shape["ancestry_layers"]) == shape["learngene_layers"]
        assert shape["descendant_heads"] == shape["ancestry_heads"]
    assert preset_options("deit-base") == {"learngene_heads": 8, "learngene_layers": 6}
    gene = learngene.extract("peg", ancestry, epochs=0)  # vit-mini: 12 layers of 6 heads of 16, width 96
    assert gene.config["learngene_heads"] == 4 and gene.config["learngene_layers"] == 6
    assert gene.tensors["layers.q.weight"].shape == (6, 4, 16, 96)
    assert gene.tensors["layers.fc1.weight"].shape == (6, 384, 96)
    assert learngene.extract("peg", ancestry, epochs=0, **preset_options("vit-mini")).config == gene.config


@pytest.mark.parametrize("options,match", [
    (dict(learngene_heads=4, epochs=0), "exceeds the ancestry's 3 heads"),
    (dict(learngene_layers=5, epochs=0), "exceeds the ancestry's 4 layers"),
    (dict(distribution="normal"), "distribution must be one of"),
    (dict(resample="step"), "resample must be one of"),
    (dict(map_form="linear"), "map_form must be one of"),
    (dict(epochs=-1), "epochs must be an integer >= 0"),
    (dict(epochs=2), "needs data"),
])
def test_bad_options(tiny_ancestry, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("peg", tiny_ancestry, **options)


def test_bad_descendant_shapes(drawn):
    with pytest.raises(ConfigError, match="embed_dim must be 48"):
        drawn.expand(embed_dim=96, num_heads=3)
    with pytest.raises(ConfigError, match="mlp_ratio must be 4"):
        drawn.expand(mlp_ratio=2.0)
    with pytest.raises(ConfigError, match="qkv_bias"):
        drawn.expand(qkv_bias=False)


# -- the learngene: mixtures of the ancestry ------------------------------------------------------
def test_learngene_is_the_mixture_of_the_ancestry(tiny_ancestry, drawn):
    parent, layers = to_stack(tiny_ancestry), layers_of(drawn)
    p_head, p_ffn = mixture_of(drawn)
    assert p_head.shape == (2, 2, 3) and p_ffn.shape == (2, 4)
    matched = matched_layers(4, 2)
    assert matched == [0, 2] == drawn.provenance["peg"]["matched_layers"]
    for l, a in enumerate(matched):
        for j in range(2):
            for key in ("q.weight", "k.weight", "v.weight", "q.bias"):
                want = sum(p_head[l, j, h] * parent.blocks[a][key][h] for h in range(3))
                torch.testing.assert_close(layers[key][l, j], want)
            want = sum(p_head[l, j, h] * parent.blocks[a]["proj.weight"][:, h] for h in range(3))
            torch.testing.assert_close(layers["proj.weight"][l, :, j], want)
        # the reference's defect: its mixture is overwritten by the first H_b heads; ours is used
        assert not torch.allclose(layers["q.weight"][l], parent.blocks[a]["q.weight"][:2])
        for key in ("norm1.weight", "norm2.bias", "proj.bias"):  # the matched layer's, unmixed
            assert torch.equal(layers[key][l], parent.blocks[a][key])
        for key in ("fc1.weight", "fc2.bias"):  # FFNs mix all L_a layers
            torch.testing.assert_close(layers[key][l], sum(p_ffn[l, i] * parent.blocks[i][key] for i in range(4)))
    for key in ("patch.weight", "pos_embed", "cls_token"):
        assert torch.equal(drawn.tensors[f"stem.{key}"], parent.stem[key])


def test_learngene_changes_with_the_ancestry(tiny_ancestry, drawn, data, condensed):
    other = randomize_(tiny_vit(), seed=0)
    with torch.no_grad():
        other.blocks[1].mlp.fc1.weight.add_(1.0)      # layer 1 is not matched: only its FFN reaches the learngene
        other.blocks[2].attn.qkv.weight[:16].mul_(2)  # head 0's q of matched layer 2
    changed = learngene.extract("peg", other, epochs=0)
    a, b = layers_of(drawn), layers_of(changed)
    assert not torch.equal(a["fc1.weight"], b["fc1.weight"]) and torch.equal(a["fc2.weight"], b["fc2.weight"])
    assert torch.equal(a["q.weight"][0], b["q.weight"][0]) and not torch.equal(a["q.weight"][1], b["q.weight"][1])
    # condensed learngenes too: same data, same draws, a different ancestry -> different tensors
    changed = learngene.extract("peg", other, data=data, **TRAIN)
    assert all(not torch.equal(v, changed.tensors[k]) for k, v in condensed.tensors.items() if k.startswith("layers."))


def test_mixture_weights():
    kw = dict(layers=3, heads=4, ancestry_heads=6, ancestry_layers=12, seed=0)
    g0, g1 = mixture_weights("gaussian", epoch=0, **kw), mixture_weights("gaussian", epoch=1, **kw)
    assert g0[0].shape == (3, 4, 6) and g0[1].shape == (3, 12)
    assert torch.equal(g0[0], mixture_weights("gaussian", epoch=0, **kw)[0])  # a function of (seed, epoch)
    assert not torch.equal(g0[0], g1[0]) and (g0[0] < 0).any()               # fresh per epoch, N(0, 1)
    s = mixture_weights("softmax", epoch=0, **kw)
    torch.testing.assert_close(s[1].sum(-1), torch.ones(3))
    torch.testing.assert_close(s[0], g0[0].softmax(-1))
    u = mixture_weights("uniform", epoch=5, **kw)
    assert torch.equal(u[0], torch.full((3, 4, 6), 1 / 6)) and torch.equal(u[1], torch.full((3, 12), 1 / 12))


def test_condenser_resamples_each_epoch(tiny_ancestry):
    stack = to_stack(tiny_ancestry).clone()
    pool = ancestry_pool(stack, 2)
    args = dict(pool=pool, stem=stack.stem, head=stack.head, learngene_heads=2, distribution="gaussian", seed=0,
                steps_per_epoch=2)
    for resample in ("epoch", "once"):
        aux = PegCondenser(arch_of(tiny_ancestry), maps=PegMaps(2, 4, 2, 3), resample=resample, **args)
        x, seen, draws = torch.randn(1, 1, 28, 28), [], []
        for _ in range(5):
            aux.train()
            aux(x)
            seen.append(aux.epoch)
            draws.append(aux.learngene_layers()["q.weight"].detach())
            aux.eval()
            aux(x)  # evaluation uses the training epoch's draw, and does not count
            assert aux.epoch == seen[-1]
        assert seen == [0, 0, 1, 1, 2]  # 2 training forwards per epoch
        assert torch.equal(draws[0], draws[1]) and torch.equal(draws[2], draws[0]) == (resample == "once")


# -- condensing -----------------------------------------------------------------------------------
def test_condensing_distils_into_pool_and_maps(tiny_ancestry, drawn, condensed, tmp_path):
    dist = condensed.provenance["peg"]["distillation"]
    assert dist["steps"] == 6 and condensed.provenance["cost"]["samples_seen"] == 96
    # the stored draw is the last epoch's (epoch 1 of 0..1), not epoch 0's
    p_head, p_ffn = mixture_of(condensed)
    assert condensed.provenance["peg"]["mixture"]["epoch"] == 1
    last = mixture_weights("softmax", layers=2, heads=2, ancestry_heads=3, ancestry_layers=4, seed=0, epoch=1)
    torch.testing.assert_close(p_head, last[0])
    torch.testing.assert_close(p_ffn, last[1])
    # the pool was trained: the stored layers are not the untrained ancestry's mixture with that draw
    untrained = sample_learngene(ancestry_pool(to_stack(tiny_ancestry), 2), *last)
    assert all(not torch.allclose(untrained[k], v) for k, v in layers_of(condensed).items() if k.endswith("weight"))
    # every map was trained, the FFN layer map included (the reference's never trains)
    for name, t in drawn.tensors.items():
        if name.startswith("maps.") and name.endswith("weight"):
            assert not torch.equal(t, condensed.tensors[name]), name
    assert drawn.num_parameters == condensed.num_parameters < sum(p.numel() for p in tiny_ancestry.parameters())
    condensed.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.config == condensed.config and loaded.tensors.keys() == condensed.tensors.keys()
    a, b = condensed.expand(depth=3, seed=2).state_dict(), loaded.expand(depth=3, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_refuses_inconsistent_tensors(drawn, tmp_path):
    bad = learngene.Learngene(method="peg", config=dict(drawn.config), tensors=dict(drawn.tensors),
                                       provenance=drawn.provenance)
    bad.tensors["layers.q.weight"] = bad.tensors["layers.q.weight"][:, :1].contiguous()
    bad.save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match="layers.q.weight has shape"):
        learngene.load(tmp_path / "bad")
    bad.tensors = {k: v for k, v in drawn.tensors.items() if k != "maps.head_o.0.0.bias"}
    bad.save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match="stored maps do not fit"):
        learngene.load(tmp_path / "bad")


# -- expansion ------------------------------------------------------------------------------------
def test_interpolation_matrix():
    assert torch.equal(interpolation_matrix(3, 3), torch.eye(3))
    torch.testing.assert_close(interpolation_matrix(2, 3), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    assert torch.equal(interpolation_matrix(4, 1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(interpolation_matrix(6, 12).sum(1), torch.ones(12))


@pytest.mark.parametrize("shape", [dict(), dict(depth=2, num_heads=2), dict(depth=5, num_heads=4, num_classes=3),
                                   dict(depth=1, num_heads=6, global_pool="avg")])
def test_expand_gives_a_plain_timm_vit(drawn, shape):
    model = drawn.expand(seed=0, **shape)
    assert type(model) is timm.models.vision_transformer.VisionTransformer
    twin = timm.models.vision_transformer.VisionTransformer(**learngene.arch_of(model).to_dict())
    twin.load_state_dict(model.state_dict())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, shape.get("num_classes", 10))
    assert len(model.blocks) == shape.get("depth", 4)


def test_split_maps_start_as_the_learngene(drawn):
    """Depth L_b and H_b heads: every map is the identity, bitwise; the 2 heads of 24 dims
    are the learngene's 2 heads of 16 dims plus 8 timm-initialised dims each."""
    layers, kid = layers_of(drawn), to_stack(drawn.expand(depth=2, num_heads=2, seed=0))
    for l in range(2):
        block = kid.blocks[l]
        for key in ("norm1.weight", "proj.bias", "norm2.weight", "fc1.weight", "fc1.bias", "fc2.weight"):
            assert torch.equal(block[key], layers[key][l]), key
        for key in ("q.weight", "k.weight", "v.weight", "q.bias"):
            assert torch.equal(block[key][:, :16], layers[key][l]), key
        assert torch.equal(block["proj.weight"][:, :, :16], layers["proj.weight"][l])
    # H_b = 2 -> H_d = 3 at depth 4: heads at positions 0, 0.5, 1; proj scaled by 2/3; layers at 0, 1/3, 2/3, 1
    kid = to_stack(drawn.expand(seed=0))  # the auxiliary shape, with the (untrained) stored maps
    q, proj = layers["q.weight"], layers["proj.weight"]
    torch.testing.assert_close(kid.blocks[0]["q.weight"][1], 0.5 * (q[0, 0] + q[0, 1]))
    torch.testing.assert_close(kid.blocks[3]["proj.weight"][:, 2], proj[1, :, 1] * 2 / 3)
    torch.testing.assert_close(kid.blocks[1]["fc1.weight"], layers["fc1.weight"][0] * 2 / 3 + layers["fc1.weight"][1] / 3)


def test_nothing_inherited_is_reinitialised(drawn, monkeypatch):
    """Whatever timm's init produces reaches only the parts the learngene does not give."""
    import learngene.methods.peg.method as peg_method

    real = to_stack(drawn.expand(depth=3, num_heads=2, num_classes=5, seed=0))
    materialize = peg_method.materialize

    def sevens(stack, **kw):  # timm's init replaced by a constant: any leak into inherited tensors shows
        drawn_names = materialize(stack, **kw)
        for part in (stack.stem, stack.head, *stack.blocks):
            for t in part.values():
                if t.device.type != "meta":  # drawn just now: nothing is inherited yet at this point
                    t.data.fill_(7.0)
        return drawn_names

    monkeypatch.setattr(peg_method, "materialize", sevens)
    kid = to_stack(drawn.expand(depth=3, num_heads=2, num_classes=5, seed=0))

    def inherited(key, t):  # 2 heads of 24 dims: the first 16 of each head come from the learngene
        return t.narrow(DIM_AXIS[key], 0, 16) if key in DIM_AXIS else t

    for l in range(3):
        for key, t in kid.blocks[l].items():
            assert torch.equal(inherited(key, t), inherited(key, real.blocks[l][key])), key
            assert not (inherited(key, t) == 7.0).all(), key
        assert (kid.blocks[l]["q.weight"][:, 16:] == 7.0).all()  # the extra head dims are timm's
    for key, t in kid.stem.items():
        assert torch.equal(t, real.stem[key]), key
    assert torch.equal(kid.head["norm.weight"], drawn.tensors["head.norm.weight"])
    assert (kid.head["head.weight"] == 7.0).all()  # 5 classes, not the ancestry's 10: a new classifier


def test_fold_is_exact_for_trained_maps(drawn):
    torch.manual_seed(0)
    for shape in (dict(depth=3, num_heads=4), dict(depth=5, num_heads=2, global_pool="avg")):
        desc = expand_trainable(drawn, seed=0, **shape)
        with torch.no_grad():  # maps far from their start: negative hidden units, the ReLU bites
            for p in desc.maps.parameters():
                p.add_(0.3 * torch.randn_like(p))
        model = fold(desc)
        assert type(model) is timm.models.vision_transformer.VisionTransformer
        x = torch.randn(3, 1, 28, 28)
        desc.eval(), model.eval()
        assert torch.equal(desc(x), model(x))


def mlp_by_hand(seq: torch.nn.Sequential, t: torch.Tensor, axis: int) -> torch.Tensor:
    """A map Linear(n_in -> h) -> ReLU -> Linear(h -> n_out) applied to every vector of ``t``
    along ``axis``, written as two einsums over that axis (not the library's matrix layout)."""
    (w1, b1), (w2, b2) = ((seq[i].weight.detach(), seq[i].bias.detach()) for i in (0, 2))
    x = t.detach().movedim(axis, 0)                                            # [n_in, ...]
    widen = (slice(None),) + (None,) * (x.dim() - 1)
    hidden = torch.relu(torch.einsum("hn,n...->h...", w1, x) + b1[widen])      # [h, ...]
    return (torch.einsum("oh,h...->o...", w2, hidden) + b2[widen]).movedim(0, axis)  # n_out along axis


@pytest.mark.parametrize("shape", [dict(depth=3, num_heads=3), dict(depth=5, num_heads=2, global_pool="avg")])
def test_fold_of_a_trained_descendant_by_hand(drawn, data, shape, monkeypatch):
    """Trained a few steps (maps no longer interpolations, learngene tensors moved too), the
    descendant folds into a timm ViT whose logits are the trainable module's (autograd on,
    through functional_call) and whose blocks are the maps applied by hand to the trained
    learngene layers: per block l, the layer map over L_b, then the head map of l over H_b
    (q/k: head_qk, v: head_v, proj's input columns: head_o), then the extra head dims."""
    import learngene.methods._weight_maps as peg_maps

    desc = expand_trainable(drawn, num_classes=10, seed=0, **shape)
    start = {k: v.clone() for k, v in desc.state_dict().items()}
    fit(desc, data, config=TrainConfig(epochs=1, batch_size=16, warmup_epochs=0.0, lr=1e-2, checkpoint=False,
                                       device="cpu"), progress=False)
    trained = desc.state_dict()
    for name in ("maps.layer_attn.0.weight", "maps.layer_ffn.2.weight", "maps.head_qk.1.0.weight",
                 "maps.head_v.1.0.weight", "maps.head_o.1.2.weight", "layers.q.weight", "layers.fc1.weight"):
        assert not torch.equal(start[name], trained[name]), name
    monkeypatch.setattr(peg_maps, "FOLD_CHUNK", 100)  # folding runs in many chunks, through its buffers
    desc.eval()
    model = fold(desc).eval()
    x = data.tensors[0][:4]
    assert torch.equal(desc(x), model(x))

    layers, maps, extra = desc.group("layers"), desc.maps, desc.group("extra")
    kid = to_stack(model)
    for l in (0, shape["depth"] - 1):
        block = kid.blocks[l]
        for key, head_map in (("q.weight", maps.head_qk), ("k.bias", maps.head_qk), ("v.weight", maps.head_v),
                              ("proj.weight", maps.head_o)):
            head_axis = 1 if key == "proj.weight" else 0
            mixed = mlp_by_hand(maps.layer_attn, layers[key], 0)[l]                    # L_b -> L_d
            mixed = mlp_by_hand(head_map[l], mixed, head_axis)                         # H_b -> H_d
            if key in extra:  # more dims per head than the learngene's: the descendant's own come after
                mixed = torch.cat([mixed, extra[key][l].detach()], dim=head_axis + 1)
            torch.testing.assert_close(block[key], mixed, rtol=1e-5, atol=1e-6, msg=f"block {l} {key}")
        for key, layer_map in (("norm1.weight", maps.layer_attn), ("proj.bias", maps.layer_attn),
                               ("fc1.weight", maps.layer_ffn), ("fc2.bias", maps.layer_ffn)):
            torch.testing.assert_close(block[key], mlp_by_hand(layer_map, layers[key], 0)[l], rtol=1e-5, atol=1e-6,
                                       msg=f"block {l} {key}")


def test_maps_receive_gradients_and_train_with_the_descendant(drawn, data):
    desc = expand_trainable(drawn, depth=3, num_heads=4, num_classes=10, seed=0)
    desc(torch.randn(4, 1, 28, 28)).logsumexp(1).mean().backward()
    for name, p in desc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(n.startswith("maps.layer_ffn.") for n, _ in desc.named_parameters())
    decay_free = desc.no_weight_decay()
    assert all(n in decay_free for n, _ in desc.named_parameters() if n.startswith("maps."))
    assert "layers.fc1.weight" not in decay_free and "layers.q.bias" in decay_free
    before = {k: v.clone() for k, v in desc.state_dict().items()}
    fit(desc, data, config=TrainConfig(epochs=1, batch_size=16, warmup_epochs=0.0, checkpoint=False, device="cpu"),
        progress=False)
    after = desc.state_dict()
    assert not torch.equal(before["maps.layer_ffn.0.weight"], after["maps.layer_ffn.0.weight"])
    assert not torch.equal(before["maps.head_o.2.2.weight"], after["maps.head_o.2.2.weight"])
    x = torch.randn(2, 1, 28, 28)
    desc.eval()
    assert torch.equal(desc(x), fold(desc).eval()(x))


def test_descendant_of_the_auxiliary_shape_reuses_the_condensed_maps(condensed):
    stored = {k[len("maps."):]: v for k, v in condensed.tensors.items() if k.startswith("maps.")}
    same = expand_trainable(condensed, seed=0).maps.state_dict()  # depth 4, 3 heads: the ancestry's shape
    assert all(torch.equal(same[k], v) for k, v in stored.items())
    deeper = expand_trainable(condensed, depth=6, seed=0).maps.state_dict()  # other depth: fresh maps
    assert deeper["layer_ffn.0.weight"].shape == (12, 2)
    assert torch.equal(deeper["layer_ffn.0.weight"][:6], interpolation_matrix(2, 6))


def test_learngene_expand_trainable_and_fold_go_through_the_registry(drawn, tiny_ancestry):
    """`gene.expand(trainable=True)` gives the map-carrying module (what the bench and `learngene
    finetune` train) and `gene.fold` the plain ViT computing the same; methods without maps
    return the plain ViT for both."""
    from timm.models.vision_transformer import VisionTransformer

    trainable = drawn.expand(depth=3, num_heads=2, seed=0, trainable=True)
    assert not isinstance(trainable, VisionTransformer)
    assert any(name.startswith("maps.") for name, _ in trainable.named_parameters())
    plain = drawn.fold(trainable.eval())
    assert isinstance(plain, VisionTransformer) and len(plain.blocks) == 3
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), trainable(x), rtol=1e-4, atol=1e-5)
    heuristic = learngene.extract("heuristic", tiny_ancestry, k=1)
    model = heuristic.expand(depth=2, seed=0, trainable=True)
    assert isinstance(model, VisionTransformer) and heuristic.fold(model) is model


@pytest.mark.parametrize("shape", [dict(), dict(depth=6, num_heads=2), dict(depth=3, num_heads=6, num_classes=4)])
def test_expand_is_fold_of_the_trainable_descendant_bit_for_bit(drawn, shape, monkeypatch):
    """`expand` computes straight from the learngene (no trainable module, maps folded in chunks);
    it must give exactly the weights of folding the trainable descendant, and the descendant's
    forward (autograd on) must compute the folded model's output. Chunks of 5 elements make
    every map run in many chunks."""
    import learngene.methods._weight_maps as weight_maps

    monkeypatch.setattr(weight_maps, "FOLD_CHUNK", 5)
    trainable = expand_trainable(drawn, seed=3, **shape).eval()
    want = fold(trainable).state_dict()
    got = drawn.expand(seed=3, **shape).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    gene_storage = {t.untyped_storage().data_ptr() for t in drawn.tensors.values()}
    assert not gene_storage & {t.untyped_storage().data_ptr() for t in got.values()}  # never aliases the learngene
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(trainable(x), fold(trainable).eval()(x))


def test_maps_act_on_every_vector_along_the_axis():
    """`along` is the map (Linear -> ReLU -> Linear) applied to each vector along the axis, in
    chunks, the same numbers with autograd and without; random maps, so the ReLU bites."""
    import learngene.methods._weight_maps as weight_maps

    torch.manual_seed(0)
    maps = PegMaps(3, 5, 2, 4, "paper")
    x = torch.randn(3, 7, 2, 6)
    for seq, axis, size in ((maps.layer_ffn, 0, 5), (maps.head_qk[1], 2, 4)):
        reference = seq(x.movedim(axis, -1)).movedim(-1, axis)  # nn.Linear on each vector
        for chunk in (1, 4, 1000):
            weight_maps.FOLD_CHUNK, saved = chunk, weight_maps.FOLD_CHUNK
            try:
                with torch.enable_grad():
                    tracked = weight_maps.along(seq, x, axis)
                with torch.no_grad():
                    folded = weight_maps.along(seq, x, axis)
            finally:
                weight_maps.FOLD_CHUNK = saved
            assert tracked.requires_grad and not folded.requires_grad and tracked.shape[axis] == size
            torch.testing.assert_close(tracked, reference, rtol=1e-6, atol=1e-6)
            assert torch.equal(folded, tracked.detach()), chunk
            if axis == 0:  # folding a layer map: one tensor per output layer, each its own memory
                weight_maps.FOLD_CHUNK = chunk
                try:
                    with torch.no_grad():
                        layers = weight_maps.along_layers(seq, x)
                finally:
                    weight_maps.FOLD_CHUNK = saved
                assert len(layers) == size and all(torch.equal(a, b) for a, b in zip(layers, folded))
                assert len({t.untyped_storage().data_ptr() for t in layers}) == size
            tracked.sum().backward()  # gradients flow through the chunks to the map
            assert seq[0].weight.grad is not None and seq[0].weight.grad.abs().sum() > 0
            seq.zero_grad()


def test_flops_count_the_maps_once_per_step_and_the_vit_per_sample(drawn, data):
    """A PEG descendant computes its weights (matrix products of the maps) once per forward,
    whatever the batch: per sample it costs exactly what its folded timm ViT costs, and the
    maps are counted once per training step (the fallback 2 x params once hid both)."""
    from learngene.train.flops import count_forward

    desc = expand_trainable(drawn, depth=3, num_heads=4, num_classes=10, seed=0)
    x = data.tensors[0][:1]
    per_sample, per_call, _ = count_forward(desc, x)
    plain_sample, plain_call, _ = count_forward(fold(desc), x)
    assert per_sample == plain_sample > 0 and plain_call == 0
    maps = sum(2 * m.in_features * m.out_features for m in desc.maps.modules() if isinstance(m, torch.nn.Linear))
    assert per_call > maps  # every map runs on many elements (a weight's entries), once per call
    r = fit(desc, data, config=TrainConfig(epochs=1, batch_size=16, warmup_epochs=0.0, checkpoint=False, device="cpu"),
            progress=False)
    assert r.forward_flops_per_sample == per_sample and r.forward_flops_per_step == per_call
    assert r.train_flops == 3 * per_sample * r.samples_seen + 3 * per_call * r.steps
