"""CLIP ancestries from real checkpoint formats, offline, through `learngene extract mm-lg`: an
open_clip weights file (state dict, or open_clip's training checkpoint) named with its model, and
a Hugging Face CLIP folder (``CLIPModel.save_pretrained``). Tiny CLIPs with random weights and
the real 49,408-token BPE table, so captions are tokenised as for a pretrained CLIP."""

from __future__ import annotations

import json

import pytest

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed (pip install 'learngene-kit[clip]')")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from learngene.artifact import read_artifact  # noqa: E402
from learngene.cli import main  # noqa: E402
from learngene.clip import load_clip_ancestry  # noqa: E402
from learngene.errors import ArtifactError, ConfigError  # noqa: E402

TINY_NAME = "learngene-test-tiny-clip"
TINY_CONFIG = {  # equal tower widths: mm-lg shares blocks between the towers
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# lr at the trainer's floor (min_lr 1e-5): one condensation epoch (~20 AdamW steps) moves a
# tensor by at most ~2e-4, against ~0.1 between two random inits, so the learngene shows which
# weights were loaded (num_layers = depth: each learngene block starts as one ancestry block)
NEAR_FROZEN = ["num_layers=2", "epochs=1", "batch_size=64", "lr=1e-5", "warmup_epochs=0"]


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_config")
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)  # what a custom config is to open_clip: a registered name
    torch.manual_seed(0)
    return open_clip.create_model(TINY_NAME)


def extract_mmlg(tmp_path, ancestry: str) -> dict:
    out = tmp_path / "gene"
    assert main(["extract", "mm-lg", "--ancestry", ancestry, "--data", "digits", "--out", str(out), *NEAR_FROZEN]) == 0
    return read_artifact(out)


def assert_blocks_match(gene, fc1_image_0: torch.Tensor, fc1_text_1: torch.Tensor, logit_scale: torch.Tensor) -> None:
    close = dict(atol=5e-4, rtol=0)
    assert torch.allclose(gene.tensors["image.0.fc1.weight"], fc1_image_0, **close)
    assert torch.allclose(gene.tensors["text.1.fc1.weight"], fc1_text_1, **close)
    assert torch.allclose(gene.tensors["logit_scale"], logit_scale.reshape(()), **close)
    assert gene.provenance["tokenizer"] == {"vocab_ids": None, "context_length": 77}  # the full BPE table


@pytest.mark.parametrize("fmt", ["pt-checkpoint", "safetensors"])
def test_extract_mmlg_from_an_open_clip_file(tmp_path, tiny_open_clip, fmt):
    sd = tiny_open_clip.state_dict()
    if fmt == "pt-checkpoint":  # open_clip's training checkpoint: DDP-prefixed state dict + optimizer
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "name": "run", "state_dict": {"module." + k: v for k, v in sd.items()},
                    "optimizer": {"state": {}}}, path)
    else:
        path = tmp_path / "clip.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    gene = extract_mmlg(tmp_path, f"open_clip:{TINY_NAME}/{path}")
    assert_blocks_match(gene, sd["visual.transformer.resblocks.0.mlp.c_fc.weight"],
                        sd["transformer.resblocks.1.mlp.c_fc.weight"], sd["logit_scale"])
    assert gene.provenance["ancestry"]["clip_arch"]["image"]["image_size"] == 32


def test_extract_mmlg_from_a_hugging_face_clip_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config)
    model.save_pretrained(tmp_path / "hf-clip")
    sd = model.state_dict()
    gene = extract_mmlg(tmp_path, str(tmp_path / "hf-clip"))
    assert_blocks_match(gene, sd["vision_model.encoder.layers.0.mlp.fc1.weight"],
                        sd["text_model.encoder.layers.1.mlp.fc1.weight"], sd["logit_scale"])
    # the grown CLIP descendant keeps the tokenizer, so it can read captions later
    assert main(["expand", str(tmp_path / "gene"), "--clip", "--out", str(tmp_path / "child")]) == 0
    assert load_clip_ancestry(str(tmp_path / "child"))[1].vocab_size == 49408


def test_clip_checkpoint_errors(tmp_path, tiny_open_clip, capsys):
    path = tmp_path / "clip.pt"
    torch.save(tiny_open_clip.state_dict(), path)
    with pytest.raises(ConfigError, match=f"name the open_clip model it belongs to: open_clip:ViT-B-32/{path}"):
        load_clip_ancestry(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_clip_ancestry(f"open_clip:{TINY_NAME}/{tmp_path / 'missing.pt'}")
    with pytest.raises(ConfigError, match="unknown open_clip model 'ViT-Q-99'"):
        load_clip_ancestry(f"open_clip:ViT-Q-99/{path}")
    with pytest.raises(ArtifactError, match="cannot load open_clip .* must hold this model's state dict"):
        load_clip_ancestry(f"open_clip:ViT-B-32/{path}")  # weights of another architecture
    # the CLI: one line, no traceback
    assert main(["extract", "mm-lg", "--ancestry", f"open_clip:ViT-B-32/{path}", "--data", "digits",
                 "--out", str(tmp_path / "g")]) != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and "must hold this model's state dict" in err
