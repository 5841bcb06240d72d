"""Bad input, generated: fuzzed artifact files and CLI arguments.

Whatever the bytes or the arguments, the outcome is a result or a ``LearngeneError`` (one
line at the CLI, exit status 2): never another exception type, never a traceback, never an
unpickling. Small example counts keep this fast; run with more for a soak, e.g.
``HYPOTHESIS_PROFILE=soak pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import learngene
from learngene.artifact import CONFIG_NAME, WEIGHTS_NAME
from learngene.cli import main
from learngene.errors import LearngeneError

# function_scoped_fixture: the fixtures used per test here (a tripwire) need no reset per example.
SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("fast", max_examples=30, deadline=None, derandomize=False,
                          suppress_health_check=SUPPRESS)
settings.register_profile("soak", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "500")), deadline=None,
                          suppress_health_check=SUPPRESS)
FAST = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


_BASE: dict[str, bytes] = {}


def _base() -> dict[str, bytes]:
    """One valid artifact (heuristic, 1 block + stem + head of a tiny ViT): its two files as bytes.
    (Not a fixture: hypothesis would print these bytes with every failing example.)"""
    if not _BASE:
        torch.manual_seed(0)
        ancestry = learngene.create_vit("vit-mini", depth=2, embed_dim=24, num_heads=2)
        with tempfile.TemporaryDirectory() as d:
            path = learngene.extract("heuristic", ancestry, k=1, keep_head=True).save(Path(d) / "g")
            _BASE.update(config=(path / CONFIG_NAME).read_bytes(), weights=(path / WEIGHTS_NAME).read_bytes())
    return _BASE


@contextlib.contextmanager
def _artifact(config: bytes, weights: bytes | None):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gene"
        path.mkdir()
        (path / CONFIG_NAME).write_bytes(config)
        if weights is not None:
            (path / WEIGHTS_NAME).write_bytes(weights)
        yield path


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Nothing here may unpickle: pickle and torch.load without weights_only=True are tripwires."""
    calls = []
    real_torch_load = torch.load

    def tripwire(name):
        def f(*a, **kw):
            if name == "torch.load" and kw.get("weights_only") is True:
                return real_torch_load(*a, **kw)  # the restricted unpickler: tensors and plain containers only
            calls.append(name)
            raise AssertionError(f"{name} called")
        return f

    monkeypatch.setattr(torch, "load", tripwire("torch.load"))
    monkeypatch.setattr(pickle, "load", tripwire("pickle.load"))
    monkeypatch.setattr(pickle, "loads", tripwire("pickle.loads"))
    yield
    assert not calls, calls


def _small(arch) -> bool:
    """Arch values small enough that building the model is quick (hostile sizes are refused
    or merely slow; this keeps the fuzz loop fast)."""
    if not isinstance(arch, dict):
        return True
    for k, v in arch.items():
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) > 64:
                return False
    return True


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse; main should not let this through, but report it as such
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _check_cli(code, out, err, argv) -> None:
    assert code in (0, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err, (argv, err[-2000:])
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (argv, err[-2000:])


def _use(path: Path) -> None:
    """load, then what a user does next: `learngene info`, and expand (if the shapes are small)."""
    try:
        gene = learngene.load(path)
    except LearngeneError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return
    _check_cli(*_cli("info", path), ["info"])
    try:
        arch = gene.ancestry_arch
    except LearngeneError:
        return
    if _small(arch):
        try:
            gene.expand(seed=0)
        except LearngeneError as e:
            assert "\n" not in str(e)


# ---- the safetensors file ----------------------------------------------------------------------


@FAST
@given(data=st.data())
def test_truncated_weights(data):
    cut = data.draw(st.integers(0, len(_base()["weights"]) - 1))
    with _artifact(_base()["config"], _base()["weights"][:cut]) as path:
        with pytest.raises(LearngeneError):
            learngene.load(path)


@FAST
@given(data=st.data())
def test_flipped_header_bytes(data):
    w = bytearray(_base()["weights"])
    header_end = 8 + struct.unpack("<Q", bytes(w[:8]))[0]
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, header_end - 1))
        w[i] = data.draw(st.integers(0, 255))
    with _artifact(_base()["config"], bytes(w)) as path:
        _use(path)


DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool]


@FAST
@given(data=st.data())
def test_wrong_tensors(data):
    """Wrong dtypes, shapes, missing and extra tensors, with the manifest left as it was or
    rewritten to match (so only the method's own checks can tell)."""
    from safetensors.torch import load

    tensors = load(_base()["weights"])
    names = sorted(tensors)
    for name in data.draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        kind = data.draw(st.sampled_from(["dtype", "shape", "drop", "scalar", "empty"]))
        t = tensors[name]
        if kind == "dtype":
            tensors[name] = t.to(data.draw(st.sampled_from(DTYPES)))
        elif kind == "shape":
            tensors[name] = t.reshape(-1)[: max(1, t.numel() // data.draw(st.integers(1, 3)))].clone()
        elif kind == "scalar":
            tensors[name] = torch.tensor(1.0)
        elif kind == "empty":
            tensors[name] = torch.zeros(0, *t.shape[1:])
        else:
            del tensors[name]
    for extra in data.draw(st.lists(st.sampled_from(["blocks.0.q.weight", "blocks.7.fc1.bias", "stem.pos_embed",
                                                     "head.head.weight", "x", "blocks.-1.q.weight"]), max_size=2)):
        tensors.setdefault(extra, torch.zeros(data.draw(st.integers(0, 3)), 4))
    config = json.loads(_base()["config"])
    if data.draw(st.booleans()):
        config["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                             for k, v in tensors.items()}
    buf = save_bytes(tensors)
    with _artifact(json.dumps(config).encode(), buf) as path:
        _use(path)


def save_bytes(tensors) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


# ---- the JSON config ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, -1, 10**40, 2**63])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    """Every path into a JSON document (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    if not path:
        return value
    target = obj
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


_DELETE = object()


@FAST
@given(data=st.data())
def test_hostile_config_fields(data):
    """Every field of a valid config, replaced by any JSON value (or deleted)."""
    config = json.loads(_base()["config"])
    # Not the manifest's per-tensor entries: too many to sample from evenly, and covered above.
    paths = [p for p in _paths(config) if p[:1] != ("tensors",) or len(p) <= 3]
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(config))
        path = data.draw(st.sampled_from(paths))
        value = _DELETE if path and data.draw(st.integers(0, 5)) == 0 else data.draw(JSON)
        config = _set(config, path, value)
    text = json.dumps(config)  # NaN and Infinity literals included, as Python writes them
    with _artifact(text.encode(), _base()["weights"]) as path:
        _use(path)


@FAST
@given(doc=st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 60000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 60000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(4000, 6000).map(lambda n: b'{"format_version": ' + b"1" * n + b"}"),
    st.binary(max_size=64),
))
def test_hostile_config_documents(doc):
    with _artifact(doc, _base()["weights"]) as path:
        with pytest.raises(LearngeneError):
            learngene.load(path)


def test_non_utf8_and_bom_config():
    config = _base()["config"]
    for raw in (b"\xff\xfe" + config, b"\xef\xbb\xbf" + config, config[:-3] + b"\x80}"):
        with _artifact(raw, _base()["weights"]) as path:
            _use(path)


# ---- the CLI -----------------------------------------------------------------------------------

INTISH = st.one_of(st.integers(-3, 40),
                   st.sampled_from(["0", "-1", "abc", "", "1e3", "2.5", "nan", "99999999999999999999"]))
PATHS = st.one_of(
    st.sampled_from(["/nonexistent/x", "", ".", "/", "/dev/null", "/proc/self", "a" * 300, "x/" * 200, "~",
                     "imagefolder:", "-", "--", "genes/../..", "🙂", " "]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
)
DATASETS = st.one_of(
    # (not imagefolder:/ or /proc: legal, and the scan of a whole file system is merely slow)
    st.sampled_from(["no-such-data", "imagefolder:", "imagefolder:/nonexistent", "imagefolder:/dev/null",
                     "imagefolder:.", "MNIST", "fashion-mnist:", ":", "digits:x", "imagefolder:" + "a" * 300,
                     "imagefolder:loop"]),
    st.text(max_size=15).filter(lambda s: "\x00" not in s),
)


@pytest.fixture(scope="module")
def gene_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "gene"
    path.mkdir()
    (path / CONFIG_NAME).write_bytes(_base()["config"])
    (path / WEIGHTS_NAME).write_bytes(_base()["weights"])
    return path


@FAST
@given(depth=INTISH, embed=INTISH, heads=INTISH, classes=INTISH, data=st.data())
def test_cli_expand_shapes(gene_dir, depth, embed, heads, classes, data):
    with tempfile.TemporaryDirectory() as d:
        argv = ["expand", gene_dir, "--out", Path(d) / "child"]
        for flag, v in (("--depth", depth), ("--embed-dim", embed), ("--num-heads", heads),
                        ("--num-classes", classes)):
            if data.draw(st.booleans()):
                argv += [flag, v]
        _check_cli(*_cli(*argv), argv)


def _looped_image_folder(root: Path) -> Path:
    """Two classes of 3 tiny PNGs each, and a symlink loop inside a class folder."""
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=40 * i + (100 if c == "b" else 0)).save(root / c / f"{i}.png")
    (root / "a" / "again").symlink_to(root / "a", target_is_directory=True)
    return root


def test_image_folder_with_a_symlink_loop(tmp_path):
    from learngene.data.imagefolder import scan_image_folder

    # Before: class a's images were listed once per trip round the loop (~40 times, until the OS
    # refused the path), and two such links in one folder made the scan exponential (a hang).
    listing = scan_image_folder(_looped_image_folder(tmp_path / "loop"))
    assert listing.class_names == ("a", "b")
    assert sum(len(f) for f in listing.files.values()) == 6


class _Reached(Exception):
    """Raised instead of training: every argument was accepted."""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # garbage.pth, refused anyway
@FAST
@given(data=st.data())
def test_cli_paths_and_dataset_specs(gene_dir, data, tmp_path_factory):
    import learngene.train as train_mod

    garbage = tmp_path_factory.getbasetemp() / "garbage.pth"
    garbage.write_bytes(b"\x80\x04not a pickle at all")
    st_garbage = tmp_path_factory.getbasetemp() / "garbage.safetensors"
    st_garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    path = data.draw(st.one_of(PATHS, st.sampled_from([str(garbage), str(st_garbage), str(gene_dir),
                                                       str(gene_dir / CONFIG_NAME)])))
    dataset = data.draw(DATASETS)
    command = data.draw(st.sampled_from(["info", "expand", "eval", "extract", "finetune", "ancestry"]))
    with tempfile.TemporaryDirectory() as d:
        out = data.draw(st.sampled_from([str(Path(d) / "o"), "/proc/x", str(garbage), "/dev/null/x", ""]))
        argv = {
            "info": ["info", path],
            "expand": ["expand", path, "--out", out, "--depth", "2"],
            "eval": ["eval", path, "--data", dataset],
            "extract": ["extract", "heuristic", "--ancestry", path, "--out", out, "k=1"],
            "finetune": ["finetune", path, "--data", dataset, "--out", out, "--epochs", "1"],
            "ancestry": ["ancestry", "--data", dataset, "--out", out, "--epochs", "1", "--depth", "1",
                         "--embed-dim", "8", "--num-heads", "1"],
        }[command]
        real_fit, real_evaluate = train_mod.fit, train_mod.evaluate

        def reached(*a, **kw):
            raise _Reached

        train_mod.fit = train_mod.evaluate = reached  # no training in a fuzz loop
        if dataset == "imagefolder:loop":
            _looped_image_folder(Path(d) / "loop")
        cwd = os.getcwd()
        os.chdir(d)  # relative and empty paths land here
        try:
            code, out_text, err = _cli(*argv)
        except _Reached:
            return
        finally:
            os.chdir(cwd)
            train_mod.fit, train_mod.evaluate = real_fit, real_evaluate
        _check_cli(code, out_text, err, argv)


@FAST
@given(args=st.lists(st.one_of(st.sampled_from(["--depth", "--out", "--config", "--seed", "--x",
                                                 "k=", "=", "a.b.c=1", "train.lr=abc", "train=1", "--epochs",
                                                 "--resume", "--no-resume"]),
                                st.text(max_size=8).filter(lambda s: "\x00" not in s)), max_size=6),
       command=st.sampled_from(["expand", "info", "extract", "list", "eval", "bogus", ""]))
def test_cli_random_arguments(gene_dir, args, command):
    argv = [command, *args] if command else args
    if command in ("expand", "info"):
        argv = [command, str(gene_dir), *args]
    with tempfile.TemporaryDirectory() as d:
        cwd = os.getcwd()
        os.chdir(d)  # whatever gets written lands here
        try:
            code, out, err = _cli(*argv)
        finally:
            os.chdir(cwd)
            shutil.rmtree(d, ignore_errors=True)
    _check_cli(code, out, err, argv)


def test_no_unrestricted_unpickling_in_the_library():
    """Every torch.load in src/ passes weights_only=True; nothing calls pickle/np.load with pickles."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "learngene"
    bad = []
    for file in src.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{file.relative_to(src)}:{node.lineno}"
            if (owner, node.func.attr) == ("torch", "load"):
                flag = kw.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    bad.append(where)
            elif owner in ("pickle", "dill", "cloudpickle") and node.func.attr in ("load", "loads", "Unpickler"):
                bad.append(where)
            elif (owner, node.func.attr) in (("np", "load"), ("numpy", "load")):
                flag = kw.get("allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    bad.append(where)
    assert not bad, bad
