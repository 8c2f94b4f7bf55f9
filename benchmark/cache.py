"""Content hashing, atomic file writes and cross-process locks for the on-disk caches."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

# Bump when a change to data or training code must invalidate every cached artefact.
CODE_VERSION = "2"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-canonical form of ``obj`` (dataclasses, dicts, lists, scalars)."""
    payload = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the artefact the usual permissions so a shared cache works.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        # On any failure (exception, KeyboardInterrupt) the half-written file never becomes visible.
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` so readers never see a partial file."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(target: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    atomic_write_text(target, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


class CorruptEntry(ValueError):
    """A checksummed entry that cannot be read, is truncated, or no longer matches its checksum."""


def payload_sha256(payload: Any) -> str:
    """Hex SHA-256 of ``payload``'s canonical JSON: what a checksummed entry is checked against."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_checked(target: Path, payload: Any) -> None:
    """Write ``payload`` atomically as a JSON entry carrying its own checksum (read back by :func:`read_checked`)."""
    atomic_write_text(target, json.dumps({"sha256": payload_sha256(payload), "payload": payload}, sort_keys=True) + "\n")


def read_checked(target: Path) -> Any:
    """The payload :func:`write_checked` wrote; FileNotFoundError when there is none, CorruptEntry when the file
    cannot be read or parsed, or its payload does not match its checksum."""
    try:
        entry = json.loads(Path(target).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # unreadable, truncated mid-write, not UTF-8 or not JSON
        raise CorruptEntry(f"{target}: {exc}") from None
    if not isinstance(entry, dict) or entry.get("sha256") != payload_sha256(entry.get("payload")):
        raise CorruptEntry(f"{target}: its payload does not match its checksum")
    return entry["payload"]


def read_json(path: Path, error: type[Exception], missing: str, fix: str) -> Any:
    """Parse a JSON file the user named; ``error`` says ``missing`` when it is absent and ``fix`` when malformed."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{missing}: {fix}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}): {fix}.") from None


def lock_for(path: Path, timeout: float = 3600) -> FileLock:
    """Cross-process lock guarding the build of ``path`` (one builder, the others wait and reuse)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=timeout)


def model_fingerprint(model: nn.Module) -> bytes:
    """Hash of the model's class, parameter/buffer names, dtypes, shapes and values."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    state = model.state_dict()
    h.update(";".join(f"{k}:{t.dtype}:{tuple(t.shape)}" for k, t in state.items()).encode())
    if state:
        # One buffer of raw bytes (a uint8 view works for every dtype, bf16 included): hashing
        # tensor by tensor costs more than the hash itself for models with many small buffers.
        flat = torch.cat([t.detach().reshape(-1).contiguous().view(torch.uint8) for t in state.values()])
        h.update(flat.cpu().numpy().tobytes())
    return h.digest()
