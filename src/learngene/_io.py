"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A reader (or a run killed at any instant) sees either the old file or the complete new
one, never a half-written file. Used for artifacts, checkpoints, configs and results.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import save_file

from .errors import ConfigError


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable (POSIX); harmless where unsupported.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows: ``os.umask`` can only
    be read by setting it, and for that instant files other threads create would get its
    stand-in (Linux >= 4.7 reports it in /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``.

    The file gets the mode ``open()`` would give a new file (0666 less the umask), not the
    temp file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # after: some writers (safetensors) make a new file
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete temp files that ``atomic_write`` left for ``names`` in ``folder`` when a process
    was killed mid-write (``.NAME.*.tmp``). They are never read; this only tidies up.
    Call it only where no other process is writing these files."""
    removed = []
    folder = Path(folder)
    for name in names:
        for tmp in folder.glob(f".{glob.escape(name)}.*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    # safetensors refuses non-contiguous or shared-memory tensors: give it clean copies.
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(clean, str(p), metadata=metadata))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save, atomically. Only for our own checkpoints, loaded with weights_only=True."""
    return atomic_write(path, lambda p: torch.save(obj, p))


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where that is unavailable (other OSes, old kernels or libc, file systems
    without support), and the caller falls back to two renames.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def atomic_replace_dir(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Write a whole folder atomically: ``fill(tmp_dir)``, then swap it in for ``path``.

    If ``path`` exists it is replaced; at no point does ``path`` hold a partial folder.
    On Linux the two folders are exchanged in one atomic step, so ``path`` always holds
    the old or the new complete folder. Elsewhere the old folder is first renamed to
    ``.NAME.old-PID``, so ``path`` is briefly absent (a kill right then leaves the old
    copy there; ``learngene.load`` points at it). The folder gets the mode ``mkdir`` would
    give it (0777 less the umask), not the temp folder's private 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder; remove it or choose another path")
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old: Path | None = None
    try:
        os.chmod(tmp_dir, 0o777 & ~_umask())
        fill(tmp_dir)
        for f in tmp_dir.iterdir():
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp_dir)
        if path.is_dir() and _exchange(tmp_dir, path):
            _fsync_dir(path.parent)
            shutil.rmtree(tmp_dir, ignore_errors=True)  # now the old folder
            return path
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{path} exists and is not a folder; remove it or choose another path")
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp_dir, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path
