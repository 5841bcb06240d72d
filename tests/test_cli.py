"""The CLI end to end on tiny models and the small `digits` dataset: each command's effect is
read back from what it wrote (weights, metrics.jsonl, config.yaml), not only its exit status."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from learngene.cli import main
from learngene.data import dataset_info
from learngene.train import TrainConfig


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def resolved(folder: Path) -> dict:
    return yaml.safe_load((folder / "config.yaml").read_text())


def ran(folder: Path) -> dict:
    """The TrainConfig the trainer actually used, as train_summary.json records it."""
    return json.loads((folder / "train_summary.json").read_text())["config"]


DIGITS = dataset_info("digits")
STEPS = DIGITS.num_train // 128  # one epoch at the default batch size (the last incomplete batch is dropped)


@pytest.fixture(scope="module")
def trained_ancestry(tmp_path_factory):
    """A 2-block vit-mini (width 48, 3 heads) trained one epoch on digits through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "ancestry"
    code = main(["ancestry", "--preset", "vit-mini", "--data", "digits", "--out", str(out), "--epochs", "1",
                 "--depth", "2", "--embed-dim", "48", "--num-heads", "3", "train.warmup_epochs=0"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def child(trained_ancestry, tmp_path_factory):
    """A depth-2 descendant of a heuristic learngene (the ancestry's last block), 10 classes."""
    root = tmp_path_factory.mktemp("child")
    assert main(["extract", "heuristic", "--ancestry", str(trained_ancestry), "--out", str(root / "gene"), "k=1"]) == 0
    assert main(["expand", str(root / "gene"), "--depth", "2", "--num-classes", "10", "--out", str(root / "child")]) == 0
    return root / "child"


@pytest.fixture(scope="module")
def tuned(child, tmp_path_factory):
    """``child`` fine-tuned one epoch on digits with the defaults: (out folder, printed JSON)."""
    out = tmp_path_factory.mktemp("tuned") / "tuned"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["finetune", str(child), "--data", "digits", "--epochs", "1", "--out", str(out)]) == 0
    return out, last_json(printed.getvalue())


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for word in ("heuristic", "scratch", "pretrain-finetune", "fashion-mnist", "vit-mini"):
        assert word in out


def test_ancestry_writes_model_and_resolved_config(trained_ancestry, capsys):
    files = {p.name for p in trained_ancestry.iterdir()}
    assert {"model.safetensors", "model_config.json", "config.yaml", "metrics.jsonl"} <= files
    config = resolved(trained_ancestry)
    assert config["command"] == "ancestry" and config["data"] == "digits" and config["depth"] == 2
    assert config["train"] == ran(trained_ancestry)  # what config.yaml says is what ran
    assert config["train"]["epochs"] == 1 and config["train"]["warmup_epochs"] == 0
    model_config = json.loads((trained_ancestry / "model_config.json").read_text())
    assert model_config["arch"]["depth"] == 2 and model_config["arch"]["embed_dim"] == 48
    assert model_config["cost"]["samples_seen"] == STEPS * 128 == metrics(trained_ancestry)[-1]["samples_seen"]
    code, out, _ = run(capsys, "eval", trained_ancestry, "--data", "digits")
    assert code == 0 and last_json(out)["acc"] == model_config["eval_acc"] == metrics(trained_ancestry)[-1]["eval_acc"]


def test_extract_info_expand(trained_ancestry, tmp_path, capsys):
    gene = tmp_path / "gene"
    code, out, _ = run(capsys, "extract", "heuristic", "--ancestry", trained_ancestry, "--out", gene, "k=2", "rule=first")
    assert code == 0 and last_json(out)["config"]["layers"] == [0, 1]
    resolved = yaml.safe_load((gene / "config.yaml").read_text())  # the method's defaults filled in
    assert resolved["command"] == "extract" and resolved["ancestry"] == str(trained_ancestry)
    assert resolved["options"]["k"] == 2 and resolved["options"]["rule"] == "first"
    assert "keep_head" in resolved["options"]
    code, out, _ = run(capsys, "info", gene)
    assert code == 0 and "stored parameters" in out and "depth >= 2" in out
    child = tmp_path / "child"
    code, out, _ = run(capsys, "expand", gene, "--depth", "3", "--num-classes", "10", "--out", child)
    assert code == 0 and last_json(out)["depth"] == 3
    resolved = yaml.safe_load((child / "config.yaml").read_text())
    assert resolved["command"] == "expand" and resolved["gene"] == str(gene)
    assert (resolved["depth"], resolved["num_classes"], resolved["seed"]) == (3, 10, 0)
    ancestry, grown = weights(trained_ancestry), weights(child)
    assert len({k.split(".")[1] for k in grown if k.startswith("blocks.")}) == 3
    # rule "first": ancestry blocks 0 and 1 sit at descendant positions 0 and 1, the stem with them
    for key in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "pos_embed"):
        assert torch.equal(grown[key], ancestry[key]), key


def test_finetune_saves_the_trained_weights_and_eval_reproduces_their_accuracy(child, tuned, capsys):
    out, printed = tuned
    before, after = weights(child), weights(out)
    assert before.keys() == after.keys()
    assert [k for k in before if torch.equal(before[k], after[k])] == []  # every tensor trained
    logged = metrics(out)[-1]
    model_config = json.loads((out / "model_config.json").read_text())
    assert printed["eval_acc"] == logged["eval_acc"] == model_config["eval_acc"]
    assert model_config["parent_model"] == str(child) and model_config["arch"]["depth"] == 2
    code, text, _ = run(capsys, "eval", out, "--data", "digits")
    assert code == 0
    evaluated = last_json(text)
    assert evaluated["acc"] == logged["eval_acc"] and evaluated["n"] == DIGITS.num_test
    assert evaluated["loss"] == pytest.approx(logged["eval_loss"], rel=1e-5)


def test_finetune_from_a_learngene_saves_the_trained_descendant_folded(trained_ancestry, tmp_path, capsys):
    """A PEG learngene: `finetune` grows the map-carrying descendant, trains it and saves the
    plain timm ViT it folds into; `eval` on that reproduces the accuracy the trainer logged."""
    gene, grown, out = tmp_path / "gene", tmp_path / "grown", tmp_path / "tuned"
    assert run(capsys, "extract", "peg", "--ancestry", trained_ancestry, "--out", gene, "epochs=0")[0] == 0
    assert run(capsys, "expand", gene, "--depth", "3", "--num-heads", "2", "--num-classes", "10", "--seed", "0",
               "--out", grown)[0] == 0
    code, text, err = run(capsys, "finetune", gene, "--depth", "3", "--num-heads", "2", "--data", "digits",
                          "--epochs", "1", "--out", out)
    assert code == 0, err
    model_config = json.loads((out / "model_config.json").read_text())
    assert model_config["method"] == "peg" and model_config["learngene"] == str(gene)
    assert model_config["arch"]["depth"] == 3 and model_config["arch"]["num_heads"] == 2
    start, trained = weights(grown), weights(out)
    assert start.keys() == trained.keys()  # a plain timm ViT: no maps
    assert not any(torch.equal(start[k], trained[k]) for k in start if k.endswith("qkv.weight"))
    logged = metrics(out)[-1]
    assert resolved(out)["train"] == ran(out) and resolved(out)["depth"] == 3 and resolved(out)["num_heads"] == 2
    code, text, _ = run(capsys, "eval", out, "--data", "digits")
    assert code == 0 and last_json(text)["acc"] == logged["eval_acc"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_eval_split_chooses_the_data(tuned, split, capsys):
    code, out, _ = run(capsys, "eval", tuned[0], "--data", "digits", "--split", split)
    assert code == 0
    evaluated = last_json(out)
    assert evaluated["split"] == split
    assert evaluated["n"] == (DIGITS.num_train if split == "train" else DIGITS.num_test)


def test_training_options_take_effect(child, tuned, tmp_path, capsys):
    """--lr and train.lr= set the same peak lr (the same weights, bit for bit); other values train
    other weights; config.yaml records what the trainer ran. With the default one warmup epoch
    and one epoch, the last step is at the peak: metrics.jsonl's lr is the peak lr."""
    default, _ = tuned
    runs = {"flag": ["--lr", "0.004"], "override": ["train.lr=0.004"],
            "batch_seed": ["--batch-size", "64", "--seed", "3", "train.weight_decay=0.1"]}
    for name, options in runs.items():
        code, _, err = run(capsys, "finetune", child, "--data", "digits", "--epochs", "1", "--out", tmp_path / name,
                           *options)
        assert code == 0, err
    for folder in (default, *(tmp_path / name for name in runs)):
        assert resolved(folder)["train"] == ran(folder), folder.name
    assert ran(default)["lr"] == TrainConfig().lr and metrics(default)[-1]["lr"] == pytest.approx(TrainConfig().lr)
    for name in ("flag", "override"):
        assert ran(tmp_path / name)["lr"] == 0.004 and metrics(tmp_path / name)[-1]["lr"] == pytest.approx(0.004)
    flag, override, base = weights(tmp_path / "flag"), weights(tmp_path / "override"), weights(default)
    assert all(torch.equal(flag[k], override[k]) for k in flag)
    assert not any(torch.equal(flag[k], base[k]) for k in flag if k.endswith("weight"))
    other = ran(tmp_path / "batch_seed")
    assert (other["batch_size"], other["seed"], other["weight_decay"]) == (64, 3, 0.1)
    assert metrics(tmp_path / "batch_seed")[-1]["samples_seen"] == DIGITS.num_train // 64 * 64
    assert not torch.equal(weights(tmp_path / "batch_seed")["head.weight"], base["head.weight"])


def test_yaml_config_and_override_precedence(trained_ancestry, tmp_path, capsys):
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({"ancestry": str(trained_ancestry), "out": str(tmp_path / "g"),
                                      "options": {"rule": "first", "k": 1}}))
    code, out, _ = run(capsys, "extract", "heuristic", "--config", config, "k=2")
    assert code == 0
    # rule comes from the YAML file, k from the key=value override, which beats the file
    assert last_json(out)["config"]["layers"] == [0, 1]
    saved = json.loads((tmp_path / "g" / "learngene_config.json").read_text())
    assert saved["method_config"]["layers"] == [0, 1] and saved["method_config"]["rule"] == "first"


@pytest.mark.parametrize("argv,message", [
    (["extract", "alchemy"], "unknown method 'alchemy'"),
    (["extract", "heuristic", "--ancestry", "vit-mini", "bogus=1"], "has no option 'bogus'"),
    (["info", "/nonexistent/gene"], "does not exist"),
    (["ancestry", "--data", "no-such-data", "--epochs", "1"], "unknown dataset"),
    (["ancestry", "--data", "imagefolder:/nonexistent/folder", "--epochs", "1"], "/nonexistent/folder"),
    (["ancestry", "--epochs", "0"], "epochs must be"),
    (["extract", "heuristic", "--config", "/nonexistent.yaml"], "does not exist"),
    # a path that names nothing: the message names the argument as given, and what it should be
    (["finetune", "/nonexistent/model"], "/nonexistent/model is not a model folder or learngene folder: it does not"),
    (["eval", "/nonexistent/model"], "/nonexistent/model is not a model folder: it does not exist"),
    (["expand", "/nonexistent/gene"], "/nonexistent/gene is not a learngene folder: it does not exist"),
    (["info", "/nonexistent/gene"], "/nonexistent/gene is not a learngene folder: it does not exist"),
    (["extract", "heuristic", "--ancestry", "/nonexistent/anc"], "--ancestry /nonexistent/anc is not an ancestry"),
    (["demo", "--ancestry", "/nonexistent/anc"], "--ancestry /nonexistent/anc is not an ancestry folder: it does not"),
    (["bench", "smoke", "--ancestry", "/nonexistent/anc"], "--ancestry /nonexistent/anc is not an ancestry folder"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_bad_shape_on_expand(trained_ancestry, tmp_path, capsys):
    gene = tmp_path / "gene"
    assert run(capsys, "extract", "heuristic", "--ancestry", trained_ancestry, "--out", gene, "k=2")[0] == 0
    for argv, message in ((["--depth", "0"], "depth must be a positive integer"),
                          (["--depth", "-2"], "depth must be a positive integer"),
                          (["--embed-dim", "50"], "not divisible by num_heads")):
        code, _, err = run(capsys, "expand", gene, "--out", tmp_path / "x", *argv)
        assert code == 2 and message in err
    assert not (tmp_path / "x").exists(), "nothing half-written"


def test_extract_help_lists_the_methods_options(capsys):
    """`learngene extract METHOD --help`: every field of the method's config, with its comment."""
    import dataclasses

    from learngene.registry import get_method, list_methods

    for method in list_methods():
        with pytest.raises(SystemExit) as exit_:
            main(["extract", method, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and f"options of {method}" in out
        for field in dataclasses.fields(get_method(method).config_cls):
            assert f"\n  {field.name}: " in out, (method, field.name)
    with pytest.raises(SystemExit):
        main(["extract", "peg", "--help"])
    out = capsys.readouterr().out
    assert "learngene_heads: int | None = None\n      H_b heads per layer" in out
    # a comment wrapped onto comment-only lines below its field is kept whole
    with pytest.raises(SystemExit):
        main(["extract", "cluster-learngene", "--help"])
    assert "to break symmetry" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    assert "learngene extract METHOD --help" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["ancestry", "finetune"])
def test_training_help_says_what_the_options_do_and_their_defaults(capsys, command):
    from learngene.train import TrainConfig

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = TrainConfig()
    batch = out[out.index("--batch-size BATCH_SIZE "):out.index("--lr LR ")]
    assert "images per optimizer step" in batch and f"default {defaults.batch_size}" in batch
    assert f"(train.epochs; default {defaults.epochs})" in out
    assert "(train.lr; default 1e-3)" in out and defaults.lr == 1e-3
    augment = out[out.index("--augment, --no-augment "):out.rindex("--config FILE.yaml")]
    assert "random shift of up to 2 pixels" in augment and "RandomResizedCrop" in augment
    assert "(default: False)" in augment
