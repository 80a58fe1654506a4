"""Read a dataset lazily as (id, item) records.

- a folder: image files found recursively (by extension), in sorted order; id = the path
  relative to the folder, with "/" separators;
- a .jsonl file: one object per line with "id" and either "text" or "image" (a path, relative
  to the JSONL file's folder unless absolute); a missing id becomes the line number;
- any other file: one text per line, blank lines skipped; id = the line number (from 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clip_grpc.client import Image, Text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Record:
    """One input: an item to embed, or the reason the line could not become one."""

    id: str
    item: Text | Image | None = None
    problem: str = ""


def input_kind(path: Path) -> str:
    if path.is_dir():
        return "images"
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return "jsonl" if path.suffix.lower() == ".jsonl" else "lines"


def read_records(path: Path, kind: str, extensions=IMAGE_EXTENSIONS) -> Iterator[Record]:
    if kind == "images":
        return _image_folder(path, extensions)
    if kind == "jsonl":
        return _jsonl(path)
    if kind == "lines":
        return _text_lines(path)
    raise ValueError(f"unknown input kind {kind!r}")


def _image_folder(root: Path, extensions) -> Iterator[Record]:
    wanted = tuple(extension.lower() for extension in extensions)
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            if name.lower().endswith(wanted):
                path = Path(folder, name)
                item_id = path.relative_to(root).as_posix()
                yield Record(item_id, Image(path, id=item_id))


def _text_lines(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield Record(str(number), Text(text, id=str(number)))


def _jsonl(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                yield _json_record(line, number, path.parent)


def _json_record(line: str, number: int, base: Path) -> Record:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return Record(str(number), problem=f"line {number}: not JSON ({error.msg})")
    if not isinstance(row, dict):
        return Record(str(number), problem=f"line {number}: not a JSON object")
    item_id = str(row.get("id", number))
    text, image = row.get("text"), row.get("image")
    if (text is None) == (image is None):
        return Record(item_id, problem=f"line {number}: needs exactly one of text or image")
    if text is not None:
        if not isinstance(text, str):
            return Record(item_id, problem=f"line {number}: text must be a string")
        return Record(item_id, Text(text, id=item_id))
    if not isinstance(image, str):
        return Record(item_id, problem=f"line {number}: image must be a path string")
    return Record(item_id, Image(base / image, id=item_id))


def count_records(path: Path, kind: str, extensions=IMAGE_EXTENSIONS) -> int:
    """How many records `read_records` will give (a cheap first pass for the progress bar)."""
    if kind == "images":
        return sum(1 for _ in _image_folder(path, extensions))
    with open(path, encoding="utf-8") as file:
        return sum(1 for line in file if line.strip())
