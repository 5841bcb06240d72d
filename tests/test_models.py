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
