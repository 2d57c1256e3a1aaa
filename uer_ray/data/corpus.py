"""Corpus files -> byte-range chunks -> cleaned documents, with every repair counted.

A chunk ``[start, end)`` owns the documents that *start* inside it (Hadoop's split rule), so documents survive chunk
boundaries and every document is read exactly once whatever the chunk size. Two layouts:
``paragraph``: one sentence a line, documents separated by blank lines; ``line``: one document a line.

Inputs: local files, directories, globs, and URIs that pyarrow's filesystems open (``file://``, ``s3://``, ``gs://``,
...; a directory or a glob in the last path component works there too). ``.gz`` and ``.zst`` files are
decompressed as a stream; such a file is one chunk (it cannot be split), read with bounded memory.
"""
from __future__ import annotations

import fnmatch
import glob
import gzip
import io
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

# C0/C1 control characters except tab; NUL is the common one in scraped text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MAX_EXAMPLES = 5  # examples kept per repair kind, for the manifest


@dataclass
class RepairLog:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str, n: int = 1) -> None:
        self.counts[kind] += n
        kept = self.examples.setdefault(kind, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(where)

    def merge(self, other: "RepairLog") -> None:
        self.counts.update(other.counts)
        for kind, items in other.examples.items():
            kept = self.examples.setdefault(kind, [])
            kept.extend(items[: MAX_EXAMPLES - len(kept)])

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": dict(sorted(self.examples.items()))}

    @classmethod
    def from_dict(cls, data: dict) -> "RepairLog":
        return cls(Counter(data.get("counts", {})), {k: list(v) for k, v in data.get("examples", {}).items()})


COMPRESSED = (".gz", ".zst", ".zstd")


def is_uri(path: str) -> bool:
    return "://" in path


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED)


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def _expand_uri(pattern: str) -> list[str]:
    import pyarrow.fs as pafs

    scheme = pattern.split("://", 1)[0] + "://"
    glob_part = any(ch in pattern for ch in "*?[")
    base = pattern.rsplit("/", 1)[0] if glob_part else pattern
    fs, path = _filesystem(base)
    prefix = scheme if scheme != "file://" else "file://"
    info = fs.get_file_info(path)
    if glob_part:
        name_pattern = pattern.rsplit("/", 1)[1]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        found = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, name_pattern)]
    elif info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        found = [i.path for i in infos if i.type == pafs.FileType.File]
    elif info.type == pafs.FileType.File:
        found = [path]
    else:
        found = []
    return sorted(prefix + (p if scheme != "file://" or p.startswith("/") else "/" + p) for p in found)


def expand_paths(patterns: list[str]) -> list[str]:
    """Files, directories (all files inside, sorted), globs and URIs -> a list of files; missing ones raise."""
    files: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        if is_uri(pattern):
            found = _expand_uri(pattern)
        elif os.path.isdir(pattern):
            found = sorted(str(p) for p in Path(pattern).rglob("*") if p.is_file())
        elif any(ch in pattern for ch in "*?["):
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        else:
            found = [pattern] if os.path.isfile(pattern) else []
        if not found:
            raise FileNotFoundError(f"corpus path matches no file: {pattern}")
        files.extend(found)
    return files


def file_size(path: str) -> int:
    if is_uri(path):
        fs, inner = _filesystem(path)
        return int(fs.get_file_info(inner).size)
    return os.path.getsize(path)


def open_binary(path: str) -> BinaryIO:
    """A seekable binary stream (buffered) for a local path or a URI; compressed files decompress on the fly
    (not seekable: they are read from the start)."""
    if is_uri(path):
        fs, inner = _filesystem(path)
        raw: BinaryIO = io.BufferedReader(fs.open_input_file(inner), 1 << 20)
    else:
        raw = open(path, "rb", buffering=1 << 20)
    lower = path.lower()
    if lower.endswith(".gz"):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), 1 << 20)
    if lower.endswith((".zst", ".zstd")):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), 1 << 20)
    return raw


def plan_chunks(files: list[str], chunk_bytes: int) -> list[dict]:
    """Byte-range chunks; a compressed file is one chunk (``whole``) whose ``end`` is its compressed size."""
    chunks = []
    for path in files:
        size = file_size(path)
        if is_compressed(path):
            chunks.append({"index": len(chunks), "path": path, "start": 0, "end": size, "whole": True})
            continue
        for start in range(0, max(size, 1), chunk_bytes):
            chunks.append({"index": len(chunks), "path": path, "start": start, "end": min(start + chunk_bytes, size)})
    return chunks


def clean_line(raw: bytes, where: str, log: RepairLog) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        log.add("invalid_utf8", where)
    if text.endswith("\r\n"):
        log.add("crlf", where)
    text = text.rstrip("\r\n")
    if _CONTROL.search(text):
        text = _CONTROL.sub("", text)
        log.add("control_chars", where)
    return unicodedata.normalize("NFC", text) if not text.isascii() else text


def _char_boundary(piece: bytes) -> int:
    """Length of the longest prefix of ``piece`` that does not end inside a UTF-8 character."""
    i = len(piece)
    while i > 0 and (piece[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i == 0 or piece[i - 1] < 0xC0:
        return len(piece)
    needed = 2 if piece[i - 1] < 0xE0 else 3 if piece[i - 1] < 0xF0 else 4
    return len(piece) if len(piece) - (i - 1) >= needed else max(i - 1, 1)


def _pieces(f: BinaryIO, max_bytes: int, path: str, log: RepairLog) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, bytes, starts_line) per line; a line over ``max_bytes`` comes as several pieces cut between
    characters, so memory stays bounded whatever the line length."""
    carry = b""
    starts_line = True
    position = f.tell()
    while True:
        offset = position
        piece = carry + f.readline(max_bytes - len(carry))
        carry = b""
        if not piece:
            return
        ends_line = piece.endswith(b"\n")
        if not ends_line and len(piece) >= max_bytes:
            cut = _char_boundary(piece)
            piece, carry = piece[:cut], piece[cut:]
            log.add("long_line_split", f"{path}@byte{offset}")
        position += len(piece)
        yield offset, piece, starts_line
        starts_line = ends_line


def _seek_line_start(f: BinaryIO, start: int) -> None:
    """Move to the first line that starts at or after ``start`` without reading a long line into memory."""
    f.seek(start - 1)
    while True:
        block = f.read(1 << 16)
        if not block:
            return
        newline = block.find(b"\n")
        if newline >= 0:
            f.seek(f.tell() - len(block) + newline + 1)
            return


def _previous_line_blank(f: BinaryIO) -> bool:
    pos = f.tell()
    lo = max(pos - 4, 0)
    f.seek(lo)
    before = f.read(pos - lo).replace(b"\r", b"")
    return before.endswith(b"\n\n") or (lo == 0 and before == b"\n")


def read_chunk(
    chunk: dict, layout: str, max_line_bytes: int, log: RepairLog, wheres: list[str] | None = None
) -> list[list[str]]:
    """Documents (lists of cleaned, non-empty lines) that start inside the chunk; ``wheres`` (if given) receives
    each document's location (``path:line`` in a file's first chunk, ``path@byteN`` later)."""
    path, start, end = chunk["path"], chunk["start"], chunk["end"]
    if chunk.get("whole"):
        end = float("inf")
    docs: list[list[str]] = []
    current: list[str] = []
    current_where = ""
    if wheres is None:
        wheres = []
    with open_binary(path) as f:
        # In the paragraph layout a chunk may begin inside a document owned by the previous chunk: skip it.
        skipping = False
        if start > 0:
            _seek_line_start(f, start)
            skipping = layout == "paragraph" and not _previous_line_blank(f)
        line_no = 0
        for offset, piece, starts_line in _pieces(f, max_line_bytes, path, log):
            line_no += starts_line
            # Line numbers are exact in a file's first chunk; later chunks name the byte offset.
            where = f"{path}:{line_no}" if start == 0 else f"{path}@byte{offset}"
            blank = starts_line and not piece.strip()
            if layout == "line":
                if starts_line and offset >= end:
                    break
                text = "" if blank else clean_line(piece, where, log).strip()
                if text:
                    docs.append([text])
                    wheres.append(where)
                else:
                    log.add("empty_document", where)
            elif skipping:
                skipping = not blank
            elif blank:
                if current:
                    docs.append(current)
                    wheres.append(current_where)
                    current = []
            elif not current and starts_line and offset >= end:
                break
            else:
                text = clean_line(piece, where, log).strip()
                if text:
                    if not current:
                        current_where = where
                    current.append(text)
                else:
                    log.add("empty_line_after_cleaning", where)
    if current:
        docs.append(current)
        wheres.append(current_where)
    return docs
