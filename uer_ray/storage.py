"""Where a run's files live: a local path, NFS, or a URI (``s3://``, ``gs://``, any pyarrow filesystem).

Every stage reads and writes through these functions, so the same job spec runs on a laptop (local paths) and on a
cluster (``run.storage_path: s3://bucket/runs``): Parquet shards, vocabularies, manifests, checkpoints, fine-tuned
models and reports all live under the storage path, and every worker reads them from there.

Locations are strings: a URI, or an absolute local path (relative paths are made absolute on the driver, where the
user typed the command, by the config). Writes of single files are atomic (a local temp file renamed into place; an
object store PUT is atomic by nature); a directory is published atomically by ``publish_dir`` (write it under a new
name, then switch a pointer: a symlink locally, a small JSON object in an object store).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs as pafs

POINTER_SUFFIX = ".pointer.json"


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def absolute(location: str | os.PathLike) -> str:
    """A URI unchanged; a local path (or ``file://`` URI) made absolute against the current directory."""
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return text if is_uri(text) else os.path.abspath(os.path.expanduser(text))


def join(location: str | os.PathLike, *parts: str) -> str:
    base = str(location).rstrip("/")
    return "/".join([base, *(str(p).strip("/") for p in parts if str(p))])


def parent(location: str) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[0]


def name(location: str) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


@lru_cache(maxsize=None)
def _filesystem_for(scheme_and_authority: str) -> pafs.FileSystem:
    filesystem, _ = pafs.FileSystem.from_uri(scheme_and_authority + "/")
    return filesystem


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a location; filesystems are cached per scheme and bucket."""
    text = str(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), absolute(text)
    scheme, rest = text.split("://", 1)
    authority = rest.split("/", 1)[0]
    filesystem = _filesystem_for(f"{scheme}://{authority}")
    _, path = pafs.FileSystem.from_uri(text) if scheme not in ("s3", "gs", "gcs") else (None, rest.split("?", 1)[0])
    return filesystem, path.rstrip("/")


def filesystem_and_root(location: str) -> tuple[pafs.FileSystem | None, str]:
    """What Ray Train's ``RunConfig(storage_path, storage_filesystem)`` wants: local paths as they are, URIs as an
    explicit filesystem plus the path with its scheme stripped."""
    if not is_uri(location):
        return None, absolute(location)
    return resolve(location)


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------
def exists(location: str) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(location: str) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(location: str) -> bytes:
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {location}") from None
    except OSError as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            raise FileNotFoundError(f"not found: {location}") from None
        raise


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")


def read_json(location: str) -> Any:
    return json.loads(read_text(location))


def write_bytes(location: str, data: bytes) -> None:
    """Atomic: readers see the old content or the new, never a part."""
    filesystem, path = resolve(location)
    if isinstance(filesystem, pafs.LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=Path(path).parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file is an ordinary output
        os.replace(tmp, path)
        return
    with filesystem.open_output_stream(path) as f:  # one PUT
        f.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def write_json(location: str, value: Any) -> None:
    write_text(location, json.dumps(value, indent=2, ensure_ascii=False, default=str))


def makedirs(location: str) -> None:
    filesystem, path = resolve(location)
    filesystem.create_dir(path, recursive=True)


def delete(location: str) -> None:
    """A file or a directory tree; nothing when absent."""
    filesystem, path = resolve(location)
    info = filesystem.get_file_info(path)
    if isinstance(filesystem, pafs.LocalFileSystem) and os.path.islink(path):
        os.unlink(path)
    elif info.type == pafs.FileType.Directory:
        filesystem.delete_dir(path)
    elif info.type == pafs.FileType.File:
        filesystem.delete_file(path)


def list_dir(location: str) -> list[str]:
    """Names directly under a directory (sorted); empty when it does not exist."""
    filesystem, path = resolve(location)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(info.base_name for info in filesystem.get_file_info(pafs.FileSelector(path)))


def open_input_file(location: str):
    """A random-access file (Parquet readers need one)."""
    filesystem, path = resolve(location)
    return filesystem.open_input_file(path)


def upload_dir(local_dir: str | os.PathLike, location: str) -> None:
    """Copy a local directory's contents to ``location`` (which may be local too)."""
    filesystem, path = resolve(location)
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)


def download_dir(location: str, local_dir: str | os.PathLike) -> None:
    filesystem, path = resolve(location)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local_dir), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())


def copy_dir(source: str, destination: str) -> None:
    src_fs, src_path = resolve(source)
    dst_fs, dst_path = resolve(destination)
    dst_fs.create_dir(dst_path, recursive=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


# ---------------------------------------------------------------------------------------------------------------------
# Local copies and atomic directories
# ---------------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("UER_RAY_CACHE", Path(tempfile.gettempdir()) / "uer-ray-cache"))


def local_path(location: str) -> Path:
    """A local path holding ``location`` (file or directory): itself when local, else a copy downloaded once per
    process into the node's cache (the content of a published location never changes under its name)."""
    location = resolve_published(location)
    if not is_uri(location):
        return Path(location)
    target = cache_dir() / hashlib.sha1(location.encode()).hexdigest()[:16] / name(location)
    if not target.exists():
        staging = target.parent / f".tmp-{uuid.uuid4().hex[:8]}"
        if is_dir(location):
            download_dir(location, staging)
        else:
            staging.parent.mkdir(parents=True, exist_ok=True)
            staging.write_bytes(read_bytes(location))
        try:
            os.replace(staging, target)
        except OSError:  # another process of this node won the race
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def staging_dir(prefix: str = "uer-ray-") -> Iterator[Path]:
    """A local temp directory removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish_dir(local_dir: str | os.PathLike, location: str, keep: int = 1) -> str:
    """Make ``location`` name a copy of ``local_dir``, atomically: the copy is written under
    ``<location>@<unique>`` and only then does ``location`` point to it (a symlink swapped with rename locally, a
    ``<location>.pointer.json`` object elsewhere). A crash mid-write leaves ``location`` naming the previous complete
    version. Older versions beyond ``keep`` are removed. Returns the versioned location."""
    # Versions sort by name in the order they were written (object stores keep no directory times).
    version = f"{location.rstrip('/')}@{time.time_ns() // 1000:016x}-{uuid.uuid4().hex[:6]}"
    upload_dir(local_dir, version)
    if is_uri(location):
        write_json(location + POINTER_SUFFIX, {"target": name(version)})
    else:
        link = Path(location)
        tmp_link = link.parent / f".tmp-link-{uuid.uuid4().hex[:8]}"
        os.symlink(name(version), tmp_link)
        os.replace(tmp_link, link)
    _prune_versions(location, current=name(version), keep=keep)
    return version


def resolve_published(location: str) -> str:
    """The directory a published ``location`` names (follows the pointer object); other locations unchanged."""
    location = str(location).rstrip("/")
    if is_uri(location) and not exists(location) and exists(location + POINTER_SUFFIX):
        return join(parent(location), read_json(location + POINTER_SUFFIX)["target"])
    return location


def _prune_versions(location: str, current: str, keep: int) -> None:
    prefix = name(location) + "@"
    versions = [n for n in list_dir(parent(location)) if n.startswith(prefix) and n != current]
    if not versions:
        return
    for old in sorted(versions)[: max(0, len(versions) - (keep - 1))]:
        delete(join(parent(location), old))
