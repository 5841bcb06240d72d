"""The CLI end to end on tiny models and the small `digits` dataset."""

from __future__ import annotations

import json

import pytest
import yaml

from learngene.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained_ancestry(tmp_path_factory):
    """A 4-block vit-mini trained one epoch on digits through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "ancestry"
    code = main(["ancestry", "--preset", "vit-mini", "--data", "digits", "--out", str(out), "--epochs", "1",
                 "--depth", "4", "--embed-dim", "48", "--num-heads", "3", "train.warmup_epochs=0"])
    assert code == 0
    return out


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for word in ("heuristic", "scratch", "pretrain-finetune", "fashion-mnist", "vit-mini"):
        assert word in out


def test_ancestry_writes_model_and_resolved_config(trained_ancestry):
    files = {p.name for p in trained_ancestry.iterdir()}
    assert {"model.safetensors", "model_config.json", "config.yaml", "metrics.jsonl"} <= files
    resolved = yaml.safe_load((trained_ancestry / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["train"]["warmup_epochs"] == 0
    config = json.loads((trained_ancestry / "model_config.json").read_text())
    assert config["arch"]["depth"] == 4 and config["cost"]["samples_seen"] > 0


def test_extract_info_expand_finetune_eval(trained_ancestry, tmp_path, capsys):
    gene = tmp_path / "gene"
    code, out, _ = run(capsys, "extract", "heuristic", "--ancestry", trained_ancestry, "--out", gene, "k=2", "rule=first")
    assert code == 0 and last_json(out)["config"]["layers"] == [0, 1]
    code, out, _ = run(capsys, "info", gene)
    assert code == 0 and "stored parameters" in out and "depth >= 2" in out
    child = tmp_path / "child"
    code, out, _ = run(capsys, "expand", gene, "--depth", "3", "--num-classes", "10", "--out", child)
    assert code == 0 and last_json(out)["depth"] == 3
    tuned = tmp_path / "tuned"
    code, out, _ = run(capsys, "finetune", child, "--data", "digits", "--epochs", "1", "--out", tuned)
    assert code == 0 and 0.0 <= last_json(out)["eval_acc"] <= 1.0
    code, out, _ = run(capsys, "eval", tuned, "--data", "digits")
    assert code == 0 and "acc" in out
    # finetune straight from a learngene folder (expands first)
    code, out, _ = run(capsys, "finetune", gene, "--depth", "2", "--data", "digits", "--epochs", "1",
                       "--out", tmp_path / "tuned2")
    assert code == 0


def test_yaml_config_and_override_precedence(trained_ancestry, tmp_path, capsys):
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({"ancestry": str(trained_ancestry), "out": str(tmp_path / "g"),
                                      "options": {"rule": "first", "k": 1}}))
    code, out, _ = run(capsys, "extract", "heuristic", "--config", config, "k=3")
    assert code == 0
    # rule comes from the YAML file, k from the key=value override, which beats the file
    assert last_json(out)["config"]["layers"] == [0, 1, 2]


@pytest.mark.parametrize("argv,message", [
    (["extract", "alchemy"], "unknown method 'alchemy'"),
    (["extract", "heuristic", "--ancestry", "vit-mini", "bogus=1"], "has no option 'bogus'"),
    (["info", "/nonexistent/gene"], "does not exist"),
    (["ancestry", "--data", "no-such-data", "--epochs", "1"], "unknown dataset"),
    (["ancestry", "--data", "imagefolder:/nonexistent/folder", "--epochs", "1"], "/nonexistent/folder"),
    (["ancestry", "--epochs", "0"], "epochs must be"),
    (["extract", "heuristic", "--config", "/nonexistent.yaml"], "does not exist"),
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
