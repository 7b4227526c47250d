"""Android boot/recovery images (v0–v4) and vendor_boot (v3/v4) as a folder, sans-I/O.

Seeds 000 and 004 unpack boot and recovery by hand (AIK, MTK headers). The view gives what
they were after: ``kernel``, ``ramdisk`` (as stored), ``ramdisk.d/`` (the cpio inside, when
it is gzip or plain newc and small), ``second``, ``recovery_dtbo``, ``dtb``, ``bootconfig``
and ``header.txt`` (cmdline, addresses, versions, the MediaTek headers found).

MediaTek's 512-byte header (magic 0x58881688, name ``KERNEL``/``ROOTFS``/``RECOVERY``) in
front of the kernel or ramdisk is stripped, and described in header.txt: the files are then
what the kernel and init really get. Layouts: ../shared/reference/formats.md §8 and AOSP's
bootimg.h. Every size is checked against the data: a lying or truncated image gives a
partial view with warnings, never an exception.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from mtkfs.content.view import ContentView, Entry, check_name

BOOT_MAGIC = b"ANDROID!"
VENDOR_MAGIC = b"VNDRBOOT"
MTK_MAGIC = 0x58881688
MTK_HEADER_BYTES = 512
#: A ramdisk is listed as a tree only when it decompresses to at most this.
MAX_RAMDISK_TREE_BYTES = 64 << 20


@dataclass(frozen=True)
class Section:
    name: str
    offset: int
    size: int


def looks_like_boot_image(head: bytes) -> str | None:
    """``android-boot-vN``, ``vendor-boot-vN``, ``mtk-header:NAME``, or None."""
    if head[:8] == BOOT_MAGIC and len(head) >= 44:
        version = struct.unpack_from("<I", head, 40)[0]
        return f"android-boot-v{version if version <= 4 else 0}"
    if head[:8] == VENDOR_MAGIC and len(head) >= 12:
        return f"vendor-boot-v{struct.unpack_from('<I', head, 8)[0]}"
    mtk = mtk_header(head)
    return None if mtk is None else f"mtk-header:{mtk[0]}"


def mtk_header(data: bytes) -> tuple[str, int] | None:
    """(name, payload size) of a MediaTek 512-byte header at the start of ``data``."""
    if len(data) < MTK_HEADER_BYTES or struct.unpack_from("<I", data, 0)[0] != MTK_MAGIC:
        return None
    size = struct.unpack_from("<I", data, 4)[0]
    raw = data[8:40].split(b"\0", 1)[0]
    name = "".join(c if c.isprintable() else "?" for c in raw.decode("latin-1"))
    return name, size


def _align(value: int, page: int) -> int:
    return -(-value // page) * page


def _text(data: bytes, start: int, length: int) -> str:
    raw = data[start : start + length].split(b"\0", 1)[0]
    return raw.decode("utf-8", "replace")


def _os_version(value: int) -> str:
    if not value:
        return "unset"
    a, b, c = value >> 25, (value >> 18) & 0x7F, (value >> 11) & 0x7F
    year, month = ((value >> 4) & 0x7F) + 2000, value & 0xF
    return f"{a}.{b}.{c}, security patch {year}-{month:02d}"


def parse_boot_image(data: bytes) -> ContentView:
    """The view of a boot, recovery or vendor_boot partition (see module doc)."""
    view = ContentView("android-boot")
    lines: list[str] = []
    if data[:8] == BOOT_MAGIC:
        sections = _boot_sections(data, lines, view)
    elif data[:8] == VENDOR_MAGIC:
        view.kind = "vendor-boot"
        sections = _vendor_sections(data, lines, view)
    else:
        view.warnings.append("no ANDROID! or VNDRBOOT magic: not a boot image")
        return view
    for section in sections:
        _add_section(data, section, view, lines)
    header = ("\n".join(lines) + "\n").encode()
    view.entries.insert(0, _file(("header.txt",), header, 0o444))
    return view


def _boot_sections(data: bytes, lines: list[str], view: ContentView) -> list[Section]:
    if len(data) < 1632:
        view.warnings.append(f"the header is cut short ({len(data)} bytes)")
        return []
    version = struct.unpack_from("<I", data, 40)[0]
    if version > 4:
        lines.append(f"header_version: 0 (the field holds {version:#x}: a pre-P image)")
        version = 0
    else:
        lines.append(f"header_version: {version}")
    if version >= 3:
        kernel_size, ramdisk_size, os_version, _hs = struct.unpack_from("<4I", data, 8)
        page = 4096
        lines += [
            f"os_version: {_os_version(os_version)}",
            f"cmdline: {_text(data, 44, 1536)}",
        ]
        sizes = [("kernel", kernel_size), ("ramdisk", ramdisk_size)]
        if version == 4 and len(data) >= 1584:
            sizes.append(("boot_signature", struct.unpack_from("<I", data, 1580)[0]))
    else:
        (kernel_size, kernel_addr, ramdisk_size, ramdisk_addr, second_size, second_addr,
         tags_addr, page) = struct.unpack_from("<8I", data, 8)  # fmt: skip
        os_version = struct.unpack_from("<I", data, 44)[0]
        lines += [
            f"page_size: {page}",
            f"os_version: {_os_version(os_version)}",
            f"name: {_text(data, 48, 16)}",
            f"cmdline: {_text(data, 64, 512)}{_text(data, 608, 1024)}",
            f"kernel_addr: {kernel_addr:#010x}",
            f"ramdisk_addr: {ramdisk_addr:#010x}",
            f"second_addr: {second_addr:#010x}",
            f"tags_addr: {tags_addr:#010x}",
        ]
        sizes = [("kernel", kernel_size), ("ramdisk", ramdisk_size), ("second", second_size)]
        if version >= 1 and len(data) >= 1648:
            sizes.append(("recovery_dtbo", struct.unpack_from("<I", data, 1632)[0]))
        if version == 2 and len(data) >= 1660:
            dtb_size, dtb_addr = struct.unpack_from("<IQ", data, 1648)
            sizes.append(("dtb", dtb_size))
            lines.append(f"dtb_addr: {dtb_addr:#010x}")
        if page not in (2048, 4096, 8192, 16384):
            view.warnings.append(f"page size {page} is not one Android uses; 2048 assumed")
            page = 2048
    return _lay_out(sizes, page, page, len(data), view)


def _vendor_sections(data: bytes, lines: list[str], view: ContentView) -> list[Section]:
    if len(data) < 2112:
        view.warnings.append(f"the vendor_boot header is cut short ({len(data)} bytes)")
        return []
    version, page, kernel_addr, ramdisk_addr, ramdisk_size = struct.unpack_from("<5I", data, 8)
    tags_addr = struct.unpack_from("<I", data, 2076)[0]
    header_size, dtb_size, dtb_addr = struct.unpack_from("<IIQ", data, 2096)
    lines += [
        f"vendor header_version: {version}",
        f"page_size: {page}",
        f"name: {_text(data, 2080, 16)}",
        f"cmdline: {_text(data, 28, 2048)}",
        f"kernel_addr: {kernel_addr:#010x}",
        f"ramdisk_addr: {ramdisk_addr:#010x}",
        f"tags_addr: {tags_addr:#010x}",
        f"dtb_addr: {dtb_addr:#010x}",
    ]
    if page not in (2048, 4096, 8192, 16384):
        view.warnings.append(f"page size {page} is not one Android uses; 4096 assumed")
        page = 4096
    sizes = [("vendor_ramdisk", ramdisk_size), ("dtb", dtb_size)]
    if version >= 4 and len(data) >= 2128:
        table_size, _entries, _entry_size, bootconfig = struct.unpack_from("<4I", data, 2112)
        sizes += [("vendor_ramdisk_table", table_size), ("bootconfig", bootconfig)]
    return _lay_out(sizes, _align(max(header_size, 1), page), page, len(data), view)


def _lay_out(
    sizes: list[tuple[str, int]], start: int, page: int, total: int, view: ContentView
) -> list[Section]:
    """Sections one after another, each page-aligned; those past the data are cut (warned)."""
    sections = []
    offset = start
    for name, declared in sizes:
        if declared == 0:
            continue
        if offset >= total:
            view.warnings.append(f"{name}: {declared} bytes at {offset:#x}, past the image's end")
            break
        size = min(declared, total - offset)
        if size < declared:
            view.warnings.append(f"{name}: cut to the image's end ({declared} bytes declared)")
        sections.append(Section(name, offset, size))
        offset += _align(size, page)
    return sections


def _add_section(data: bytes, section: Section, view: ContentView, lines: list[str]) -> None:
    blob = data[section.offset : section.offset + section.size]
    mtk = mtk_header(blob)
    if mtk is not None:
        name, size = mtk
        lines.append(f"{section.name}: MediaTek header {name!r}, {size} bytes of payload")
        payload = blob[MTK_HEADER_BYTES : MTK_HEADER_BYTES + size]
        if len(payload) < size:
            view.warnings.append(f"{section.name}: the MediaTek header claims {size} bytes")
        blob = payload
    lines.append(f"{section.name}_size: {len(blob)}")
    view.entries.append(_file((section.name,), blob, 0o444))
    if section.name in ("ramdisk", "vendor_ramdisk"):
        _add_ramdisk_tree(blob, f"{section.name}.d", view, lines)


def _file(path: tuple[str, ...], blob: bytes, mode: int, mtime_s: float = 0.0) -> Entry:
    return Entry(path, "file", mode, mtime_s, len(blob), data=lambda: blob)


def _add_ramdisk_tree(blob: bytes, folder: str, view: ContentView, lines: list[str]) -> None:
    raw = _decompress(blob)
    if raw is None:
        lines.append(f"{folder}: not listed (the ramdisk is not gzip or plain cpio)")
        return
    if not raw.startswith(b"070701"):
        lines.append(f"{folder}: not listed (not a newc cpio archive)")
        return
    view.entries.append(Entry((folder,), "dir", 0o555))
    view.entries += _cpio_entries(raw, folder, view.warnings)


def _decompress(blob: bytes) -> bytes | None:
    if blob.startswith(b"070701"):
        return blob
    if blob.startswith(b"\x1f\x8b"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(blob, MAX_RAMDISK_TREE_BYTES + 1)
        except zlib.error:
            return None
        return out if len(out) <= MAX_RAMDISK_TREE_BYTES else None
    return None


_S_IFMT, _S_IFDIR, _S_IFREG, _S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000


def _cpio_entries(raw: bytes, folder: str, warnings: list[str]) -> list[Entry]:
    """The newc archive's dirs, files and symlinks under ``folder`` (parents made if the
    archive leaves them out; unsafe names dropped)."""
    found: dict[tuple[str, ...], Entry] = {}
    offset = 0
    skipped = 0
    while offset + 110 <= len(raw):
        if raw[offset : offset + 6] not in (b"070701", b"070702"):
            warnings.append(f"ramdisk: cpio header expected at {offset:#x}; listing stops")
            break
        try:
            fields = [int(raw[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            warnings.append(f"ramdisk: a garbled cpio header at {offset:#x}; listing stops")
            break
        mode, mtime, size, namesize = fields[1], fields[5], fields[6], fields[11]
        name_start = offset + 110
        name = raw[name_start : name_start + namesize].split(b"\0", 1)[0].decode("utf-8", "replace")
        data_start = _align(name_start + namesize, 4)
        data = raw[data_start : data_start + size]
        offset = _align(data_start + size, 4)
        if name == "TRAILER!!!":
            break
        if len(data) < size:
            warnings.append(f"ramdisk: {name!r} is cut short")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if not parts or name.startswith("/") or not all(check_name(p) for p in parts):
            skipped += 1 if parts else 0
            continue
        path = (folder, *parts)
        kind = mode & _S_IFMT
        if kind == _S_IFDIR:
            found[path] = Entry(path, "dir", mode & 0o7777, float(mtime))
        elif kind == _S_IFREG:
            found[path] = _file(path, data, mode & 0o7777, float(mtime))
        elif kind == _S_IFLNK:
            target = data.decode("utf-8", "surrogateescape")
            found[path] = Entry(path, "symlink", 0o777, float(mtime), len(data), target=target)
        else:
            skipped += 1
    if skipped:
        warnings.append(f"ramdisk: {skipped} entries skipped (device nodes, unsafe names)")
    for path in list(found):
        for depth in range(2, len(path)):
            parent = path[:depth]
            if parent not in found or found[parent].kind != "dir":
                found[parent] = Entry(parent, "dir", 0o755)
    return [found[p] for p in sorted(found, key=lambda p: (len(p), p))]
