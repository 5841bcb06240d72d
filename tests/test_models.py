"""Presets and ancestry loading: timm state dicts (.safetensors, .pth), run folders, presets."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import learngene
from learngene.errors import ArtifactError, ConfigError
from learngene.arch import VIT_PRESETS, create_vit
from learngene.models import load_ancestry, save_model

from conftest import randomize_, tiny_vit


@pytest.mark.parametrize("name", sorted(VIT_PRESETS))
def test_presets_have_valid_shapes(name):
    kw = VIT_PRESETS[name]
    assert kw["embed_dim"] % kw["num_heads"] == 0 and kw["img_size"] % kw["patch_size"] == 0


def test_vit_mini_is_the_documented_shape():
    model = create_vit("vit-mini")
    assert len(model.blocks) == 12 and model.embed_dim == 96 and model.blocks[0].attn.num_heads == 6
    assert sum(p.numel() for p in model.parameters()) == 1_349_770


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_safetensors_with_inferred_arch(tmp_path):
    model = randomize_(tiny_vit(num_heads=3))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    # the head count is not in the shapes: pass it (here as an override); the rest is inferred
    loaded = load_ancestry(tmp_path / "w.safetensors", num_heads=3)
    assert same_weights(model, loaded)


def test_load_pth_with_preset_and_wrapper(tmp_path):
    model = randomize_(tiny_vit())
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")  # DeiT-style wrapper
    loaded = load_ancestry(tmp_path / "ckpt.pth", preset="vit-mini", depth=4, embed_dim=48, num_heads=3)
    assert same_weights(model, loaded)


class NotWeights:
    def __reduce__(self):  # a pickle that would run code if unpickled without weights_only
        return (print, ("unpickled!",))


def test_pth_with_arbitrary_pickle_is_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": NotWeights()}, f, protocol=2)
    with pytest.raises(ArtifactError, match="cannot read weights"):
        load_ancestry(tmp_path / "evil.pth", preset="vit-mini")


def test_weights_that_do_not_fit_the_preset(tmp_path):
    save_file(randomize_(tiny_vit()).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ArtifactError, match="do not fit the architecture"):
        load_ancestry(tmp_path / "w.safetensors", preset="vit-mini")


def test_run_folder_round_trip(tmp_path):
    model = randomize_(tiny_vit(class_token=False, global_pool="avg"))
    save_model(model, tmp_path / "run", note="test")
    assert same_weights(model, load_ancestry(tmp_path / "run"))


@pytest.mark.parametrize("source,error,match", [
    ("no_such_file.safetensors", ConfigError, "does not exist"),
    ("vit-gigantic-9000", ConfigError, "unknown ancestry"),
])
def test_bad_sources(source, error, match):
    with pytest.raises(error, match=match):
        load_ancestry(source)


def test_preset_and_timm_name_sources():
    assert len(load_ancestry("vit-mini", depth=2).blocks) == 2
    # a timm name without network: pretrained=False builds the architecture
    model = load_ancestry("deit_tiny_patch16_224", pretrained=False)
    assert model.embed_dim == 192
    assert learngene.arch_of(model).to_dict()["num_heads"] == 3
    # a name with a weights tag (Weight Selection's ImageNet-21K ViT-S): that tag's classifier
    tagged = load_ancestry("vit_small_patch16_224.augreg_in21k", pretrained=False)
    assert (tagged.embed_dim, tagged.num_classes) == (384, 21843)


# -- real checkpoint formats, offline: DeiT-shaped models with random weights ---------------
def deit_like(depth: int = 2):
    """timm's deit_tiny_patch16_224 (224 px, patch 16, width 192, 3 heads), fewer blocks, random weights."""
    import timm

    return randomize_(timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=depth))


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "optimizer": {"state": {}}, "epoch": 299},   # DeiT's release / training file
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model_ema": sd},
    lambda sd: {"module." + k: v for k, v in sd.items()},                # saved from inside DDP
    lambda sd: sd,
], ids=["model", "state_dict", "model_ema", "ddp-prefix", "bare"])
def test_deit_pth_architecture_inferred(tmp_path, wrap):
    model = deit_like()
    torch.save(wrap(model.state_dict()), tmp_path / "deit.pth")
    loaded = load_ancestry(tmp_path / "deit.pth")  # no preset: everything from the weights, heads = width / 64
    assert same_weights(model, loaded)
    arch = learngene.arch_of(loaded)
    assert (arch.side, arch.patch_size, arch.embed_dim, arch.depth, arch.num_heads, arch.num_classes) == \
        (224, 16, 192, 2, 3, 1000)


def test_deit_safetensors_architecture_inferred(tmp_path):
    model = deit_like(depth=3)
    save_file(model.state_dict(), str(tmp_path / "deit.safetensors"))
    loaded = load_ancestry(tmp_path / "deit.safetensors")
    assert same_weights(model, loaded) and learngene.arch_of(loaded).num_heads == 3
    # the same forward: the inferred architecture is the model's, not just its tensor shapes
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(model.eval()(x), loaded.eval()(x), atol=1e-4)


def test_checkpoint_that_is_not_a_vit(tmp_path):
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save({"model": cnn.state_dict()}, tmp_path / "resnet.pth")
    with pytest.raises(ArtifactError, match="is not a timm ViT state dict.*keys begin 0.weight"):
        load_ancestry(tmp_path / "resnet.pth")
    torch.save({"model": {"lr": 0.1}, "args": [1, 2]}, tmp_path / "args.pth")
    with pytest.raises(ArtifactError, match="does not hold a state dict"):
        load_ancestry(tmp_path / "args.pth")


def test_distilled_deit_is_named(tmp_path):
    import timm

    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1)
    torch.save({"model": model.state_dict()}, tmp_path / "dist.pth")
    with pytest.raises(ArtifactError, match="distilled DeiT"):
        load_ancestry(tmp_path / "dist.pth")


def test_timm_name_pretrained_offline_is_one_line(tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what an unreachable Hub looks like to load_ancestry
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(ArtifactError) as info:
        load_ancestry("deit_tiny_patch16_224")
    assert time.monotonic() - start < 20  # no retries against the network
    message = str(info.value)
    assert "\n" not in message and "unreachable" in message and "--ancestry deit_tiny_patch16_224.pth" in message


def test_timm_name_pretrained_from_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = randomize_(timm.create_model("deit_tiny_patch16_224", pretrained=False))
    repo = tmp_path / "hub" / "models--timm--deit_tiny_patch16_224.fb_in1k"  # the Hub cache's layout
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(model.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    assert same_weights(model, load_ancestry("deit_tiny_patch16_224"))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_cli_extracts_from_a_deit_checkpoint(tmp_path, suffix):
    """`learngene extract heuristic --ancestry deit.pth`: the learngene holds the checkpoint's own blocks."""
    from learngene.artifact import read_artifact
    from learngene.cli import main

    model = deit_like(depth=3)
    sd = model.state_dict()
    path = tmp_path / f"deit{suffix}"
    torch.save({"model": sd}, path) if suffix == ".pth" else save_file(sd, str(path))
    assert main(["extract", "heuristic", "--ancestry", str(path), "--out", str(tmp_path / "gene"),
                 "rule=first", "k=1"]) == 0
    gene = read_artifact(tmp_path / "gene")
    assert torch.equal(gene.tensors["blocks.0.fc1.weight"], sd["blocks.0.mlp.fc1.weight"])
    q = sd["blocks.0.attn.qkv.weight"][:192].reshape(3, 64, 192)  # the head split inferred: 3 heads of 64
    assert torch.equal(gene.tensors["blocks.0.q.weight"], q)
    assert gene.provenance["ancestry"]["arch"]["img_size"] == 224
