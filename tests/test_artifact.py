"""The artifact format: atomic save, full validation on load, clear one-line errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import learngene
from learngene.artifact import CONFIG_NAME, WEIGHTS_NAME
from learngene.errors import ArtifactError, UnknownMethodError

from conftest import randomize_, tiny_vit


@pytest.fixture
def saved(tmp_path):
    gene = learngene.extract("heuristic", randomize_(tiny_vit()), k=2)
    path = gene.save(tmp_path / "gene")
    return gene, path


def test_files_and_manifest(saved):
    gene, path = saved
    assert set(os.listdir(path)) == {CONFIG_NAME, WEIGHTS_NAME}
    config = json.loads((path / CONFIG_NAME).read_text())
    assert config["method"] == "heuristic"
    assert config["num_parameters"] == gene.num_parameters
    assert set(config["tensors"]) == set(gene.tensors)
    assert config["provenance"]["ancestry"]["arch"]["depth"] == 4
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_save_replaces_existing_folder_whole(saved, tmp_path):
    gene, path = saved
    other = learngene.extract("heuristic", randomize_(tiny_vit(), seed=1), k=1)
    other.save(path)
    assert learngene.load(path).num_parameters == other.num_parameters


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_modes_follow_the_umask(tmp_path, umask):
    """Files and folders get the modes open() and mkdir() would give them, not the temp files'
    private 0600 / 0700."""
    from learngene._io import atomic_write_text

    gene = learngene.extract("heuristic", randomize_(tiny_vit()), k=1)
    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "notes.txt", "hello")
        path = gene.save(tmp_path / "gene")
        gene.save(path)  # replacing an existing folder gives the same modes
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(text) == 0o666 & ~umask
    assert mode(path) == 0o777 & ~umask
    assert {mode(path / name) for name in (CONFIG_NAME, WEIGHTS_NAME)} == {0o666 & ~umask}


def test_truncated_safetensors(saved):
    _, path = saved
    data = (path / WEIGHTS_NAME).read_bytes()
    (path / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        learngene.load(path)


def test_garbage_safetensors(saved):
    _, path = saved
    (path / WEIGHTS_NAME).write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        learngene.load(path)


def test_missing_weights_file(saved):
    _, path = saved
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        learngene.load(path)


def test_config_tensor_shape_mismatch(saved):
    gene, path = saved
    config = json.loads((path / CONFIG_NAME).read_text())
    name = sorted(config["tensors"])[0]
    config["tensors"][name]["shape"] = [1, 2, 3]
    (path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=f"tensor '{name}' has shape"):
        learngene.load(path)


def test_extra_tensor_in_file(saved):
    gene, path = saved
    tensors = dict(gene.tensors)
    tensors["blocks.99.q.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / WEIGHTS_NAME))
    with pytest.raises(ArtifactError, match="does not list"):
        learngene.load(path)


def test_wrong_dtype(saved):
    gene, path = saved
    tensors = {k: v.to(torch.float16).contiguous() for k, v in gene.tensors.items()}
    save_file(tensors, str(path / WEIGHTS_NAME))
    with pytest.raises(ArtifactError, match="dtype"):
        learngene.load(path)


def test_method_invariant_checked(saved):
    """The config says layers [2, 3]; a manifest-consistent file lacking layer 3 is refused."""
    gene, path = saved
    config = json.loads((path / CONFIG_NAME).read_text())
    config["method_config"]["layers"] = [1, 2]
    (path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="config and tensors disagree"):
        learngene.load(path)


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('{"format_version": 99}', "format_version"),
    ('{"format_version": 1, "method": 5}', "field 'method'"),
    ("[" * 100000, "not valid JSON"),
])
def test_hostile_config(saved, text, match):
    _, path = saved
    (path / CONFIG_NAME).write_text(text)
    with pytest.raises(ArtifactError, match=match):
        learngene.load(path)


def test_unknown_method_in_config(saved):
    _, path = saved
    config = json.loads((path / CONFIG_NAME).read_text())
    config["method"] = "alchemy"
    (path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(UnknownMethodError, match="alchemy"):
        learngene.load(path)


def test_nan_tensor_refused(saved):
    gene, path = saved
    tensors = {k: v.clone() for k, v in gene.tensors.items()}
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path / WEIGHTS_NAME))
    with pytest.raises(ArtifactError, match="NaN"):
        learngene.load(path)


def test_not_a_folder(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        learngene.load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="is a file"):
        learngene.load(tmp_path / "file")


def test_failed_save_leaves_old_artifact_intact(saved, monkeypatch):
    gene, path = saved
    before = (path / WEIGHTS_NAME).read_bytes()
    import learngene.artifact as artifact_module

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifact_module, "atomic_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        gene.save(path)
    assert (path / WEIGHTS_NAME).read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp folder left behind"
