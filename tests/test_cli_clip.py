"""The CLIP / mm-lg command line end to end on a tiny CLIP and the small `digits` dataset:
clip-ancestry -> extract mm-lg -> expand --clip -> finetune -> eval, and the timm classifier."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("open_clip", reason="open_clip_torch is not installed (pip install 'learngene-kit[clip]')")

import torch  # noqa: E402
import yaml  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from learngene.cli import main  # noqa: E402
from learngene.clip import evaluate_clip, load_caption_pairs, load_clip_ancestry, stack_to_open_clip  # noqa: E402

TINY = ["--width", "24", "--heads", "2", "--image-layers", "2", "--text-layers", "2"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def recorded_is_what_ran(folder) -> dict:
    """config.yaml's train section, checked against the TrainConfig train_summary.json says ran."""
    train = yaml.safe_load((folder / "config.yaml").read_text())["train"]
    assert train == json.loads((folder / "train_summary.json").read_text())["config"]
    return train


def test_clip_ancestry_extract_expand_finetune_eval(tmp_path, capsys):
    anc = tmp_path / "clip-ancestry"
    code, out, err = run(capsys, "clip-ancestry", "--data", "digits", "--limit", "256", "--epochs", "1",
                         "--batch-size", "64", "--out", anc, *TINY)
    assert code == 0, err
    summary = last_json(out)
    assert summary["pairs"] == 256 and summary["samples_seen"] == 256 and 0 <= summary["test"]["zero_shot_acc"] <= 1
    stack, tokenizer = load_clip_ancestry(str(anc))
    assert len(stack.image.blocks) == 2 and stack.arch["image"]["width"] == 24
    assert recorded_is_what_ran(anc)["batch_size"] == 64
    assert yaml.safe_load((anc / "config.yaml").read_text())["limit"] == 256
    # the vocabulary covers every registered dataset's class words, not only the training data's
    assert tokenizer(["a photo of a small dark sneaker"])[0, 1:-1].ne(1).all()

    gene = tmp_path / "mmlg"
    code, out, err = run(capsys, "extract", "mm-lg", "--ancestry", anc, "--data", "digits", "--out", gene,
                         "num_layers=1", "epochs=1", "batch_size=64")
    assert code == 0, err
    assert last_json(out)["method"] == "mm-lg" and last_json(out)["config"]["num_layers"] == 1
    code, out, err = run(capsys, "info", gene)
    assert code == 0 and "CLIP descendants" in out

    child = tmp_path / "clip-child"
    code, out, err = run(capsys, "expand", gene, "--clip", "--depth", "3", "--text-depth", "1", "--out", child)
    assert code == 0, err
    assert last_json(out)["image_layers"] == 3 and last_json(out)["text_layers"] == 1
    grown, grown_tok = load_clip_ancestry(str(child))
    assert len(grown.image.blocks) == 3 and len(grown.text.blocks) == 1
    assert grown_tok.vocab_ids == tokenizer.vocab_ids  # the ancestry's tokenizer travels in the learngene
    assert type(stack_to_open_clip(grown)).__name__ == "CLIP"

    tuned = tmp_path / "clip-tuned"
    code, out, err = run(capsys, "finetune", child, "--data", "digits", "--epochs", "1", "--batch-size", "64",
                         "--out", tuned)
    assert code == 0, err
    result = last_json(out)
    assert set(result["before"]) == set(result["after"]) >= {"zero_shot_acc", "r@1", "r@5"}
    assert recorded_is_what_ran(tuned)["epochs"] == 1
    before, after = load_clip_ancestry(str(child))[0], load_clip_ancestry(str(tuned))[0]
    for tower in ("image", "text"):  # the trained weights were saved
        for mine, theirs in zip(before.tower(tower).blocks, after.tower(tower).blocks):
            assert not torch.equal(mine["fc1.weight"], theirs["fc1.weight"]), tower
    code, out, err = run(capsys, "eval", tuned, "--data", "digits")
    assert code == 0, err
    metrics = last_json(out)
    assert metrics["r@5"] >= metrics["r@1"] and metrics["zero_shot_acc"] == pytest.approx(result["after"]["zero_shot_acc"])
    code, out, err = run(capsys, "eval", tuned, "--data", "digits", "--split", "train")
    assert code == 0, err
    on_train = evaluate_clip(stack_to_open_clip(after), load_caption_pairs("digits", "train", grown_tok))
    assert {k: v for k, v in last_json(out).items() if k in on_train} == pytest.approx(on_train)

    # the single-modality descendant: the image tower as a plain timm ViT classifier
    vit = tmp_path / "vit"
    code, out, err = run(capsys, "expand", gene, "--depth", "2", "--num-classes", "10", "--out", vit)
    assert code == 0, err
    code, out, err = run(capsys, "finetune", vit, "--data", "digits", "--epochs", "1", "--out", tmp_path / "vit-tuned")
    assert code == 0, err
    logged = last_json(out)["eval_acc"]
    start, trained = load_file(str(vit / "model.safetensors")), load_file(str(tmp_path / "vit-tuned" / "model.safetensors"))
    assert start.keys() == trained.keys() and not torch.equal(start["blocks.1.mlp.fc1.weight"],
                                                              trained["blocks.1.mlp.fc1.weight"])
    code, out, err = run(capsys, "eval", tmp_path / "vit-tuned", "--data", "digits")
    assert code == 0 and last_json(out)["acc"] == logged, err

    code, out, err = run(capsys, "expand", gene, "--text-depth", "2", "--out", tmp_path / "bad")
    assert code == 2 and "--clip" in err
    code, out, err = run(capsys, "extract", "mm-lg", "--ancestry", anc, "--out", tmp_path / "bad2")
    assert code == 2 and "data" in err
