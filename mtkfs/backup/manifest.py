"""``manifest.json`` of a dump folder: what was dumped from where, its hashes, resume points.

Why one JSON file and not only ``SHA256SUMS``: a restore needs each item's region, offset and
size (a blank target has no partition table to look them up in), and a resumed dump needs to
know where each file was last made durable. ``SHA256SUMS`` is written too, for ``sha256sum -c``.

The manifest is replaced atomically (write, fsync, rename) at every checkpoint. It is read
back as hostile: names become file names only after :func:`safe_file_name`, every number is
checked, and a manifest that does not parse is a :class:`~mtkfs.errors.BackupError`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtkfs.errors import BackupError

FORMAT = "mtkfs-dump"
VERSION = 1
FILE_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
KINDS = ("partition", "region", "gap")


def safe_file_name(name: str) -> str:
    """``name`` if it can be a file name in a dump folder as it is; BackupError otherwise."""
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise BackupError(f"{name!r} cannot be a file name in a dump folder")
    return name


@dataclass
class Item:
    """One dumped byte range.

    Attributes:
        name: partition name, ``region:NAME`` for a whole region, ``REGION@0xOFFSET`` for a gap.
        kind: ``partition``, ``region`` or ``gap`` (unpartitioned space: the partition tables).
        file: path of the output inside the folder (``boot.img``, ``gaps/user@0x0.bin.gz``).
        status: ``pending``, ``partial`` (resumable at ``done_bytes``) or ``done``.
        sha256: of the raw bytes, when done. ``file_sha256``: of the file as written.
        done_bytes / file_bytes: the last checkpoint (raw bytes written, file size then).
    """

    name: str
    kind: str
    region: str
    offset: int
    size: int
    file: str
    status: str = "pending"
    sha256: str | None = None
    file_sha256: str | None = None
    done_bytes: int = 0
    file_bytes: int = 0
    content: str | None = None


@dataclass
class Manifest:
    """The whole ``manifest.json``."""

    source: str
    device_id: str
    map: str
    compression: str
    regions: dict[str, int]
    items: list[Item]
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def item(self, name: str) -> Item | None:
        return next((i for i in self.items if i.name == name), None)

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return (json.dumps(body, indent=2) + "\n").encode()

    def save(self, folder: Path) -> None:
        """Replace ``folder/manifest.json`` atomically and durably."""
        _replace(folder / FILE_NAME, self.to_json())

    def save_sums(self, folder: Path) -> None:
        """``SHA256SUMS`` of the finished files (``sha256sum -c SHA256SUMS`` checks them)."""
        lines = [f"{i.file_sha256}  {i.file}\n" for i in self.items if i.status == "done"]
        _replace(folder / SUMS_NAME, "".join(lines).encode())


def _replace(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(folder: Path) -> Manifest | None:
    """The manifest of ``folder``, None when there is none; BackupError when it is unusable."""
    path = folder / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"{path}: cannot read it: {exc.strerror}") from exc
    try:
        return parse(json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        raise BackupError(f"{path} is not an mtkfs dump manifest ({exc})") from exc


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} is not a byte count")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def parse(body: Any) -> Manifest:
    """Validate a decoded manifest; ValueError naming the first problem."""
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError("no 'format: mtkfs-dump'")
    if body.get("version") != VERSION:
        raise ValueError(f"version {body.get('version')!r}, this mtkfs reads {VERSION}")
    regions = body["regions"]
    if not isinstance(regions, dict):
        raise ValueError("regions is not an object")
    items = []
    seen_files: set[str] = set()
    for raw in body["items"]:
        if not isinstance(raw, dict):
            raise ValueError("an item is not an object")
        item = Item(
            name=_str(raw["name"], "name"),
            kind=_str(raw["kind"], "kind"),
            region=_str(raw["region"], "region"),
            offset=_int(raw["offset"], "offset"),
            size=_int(raw["size"], "size"),
            file=_str(raw["file"], "file"),
            status=_str(raw["status"], "status"),
            sha256=raw.get("sha256"),
            file_sha256=raw.get("file_sha256"),
            done_bytes=_int(raw.get("done_bytes", 0), "done_bytes"),
            file_bytes=_int(raw.get("file_bytes", 0), "file_bytes"),
            content=raw.get("content") if isinstance(raw.get("content"), str) else None,
        )
        if item.kind not in KINDS or item.status not in ("pending", "partial", "done"):
            raise ValueError(f"{item.name}: kind {item.kind!r} / status {item.status!r}")
        parts = item.file.split("/")
        if len(parts) > 2 or any(not _SAFE_NAME.fullmatch(p.replace("@", "_")) for p in parts):
            raise ValueError(f"{item.name}: file {item.file!r} leaves the folder")
        if item.file in seen_files:
            raise ValueError(f"{item.file} is listed twice")
        seen_files.add(item.file)
        for digest in (item.sha256, item.file_sha256):
            if digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
                raise ValueError(f"{item.name}: a sha256 is not 64 hex digits")
        if item.status == "done" and item.sha256 is None:
            raise ValueError(f"{item.name}: done without a sha256")
        if item.done_bytes > item.size:
            raise ValueError(f"{item.name}: done_bytes past its size")
        items.append(item)
    sessions = body.get("sessions", [])
    return Manifest(
        source=_str(body["source"], "source"),
        device_id=_str(body["device_id"], "device_id"),
        map=_str(body["map"], "map"),
        compression=_str(body["compression"], "compression"),
        regions={_str(k, "region"): _int(v, "region size") for k, v in regions.items()},
        items=items,
        sessions=sessions if isinstance(sessions, list) else [],
    )
