"""Persistent chunk store: round trips across reopens, torn writes, corruption, hostile ids."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zlib
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.diskcache import RECORD, DiskCache, encode_record, folder_name
from mtkfs.errors import BusyError, UsageError
from mtkfs.maps.model import Region

CHUNK = 16
DEVICE = "usb:0e8d:2000/1-3"
# user: 10 chunks, the last one 5 bytes short; boot1: 2 whole chunks.
SIZES = {"user": 9 * CHUNK + 11, "boot1": 2 * CHUNK}


def regions(sizes: dict[str, int] = SIZES) -> dict[str, Region]:
    return {name: Region(name, size) for name, size in sizes.items()}


def chunk(index: int, length: int = CHUNK, salt: int = 0) -> bytes:
    """Recognisable bytes for one chunk."""
    return bytes((index * 31 + k * 7 + salt) & 0xFF for k in range(length))


async def open_cache(
    root: Path,
    *,
    device_id: str = DEVICE,
    chunk_bytes: int = CHUNK,
    sizes: dict[str, int] = SIZES,
) -> DiskCache:
    return await DiskCache.open(
        root, device_id=device_id, chunk_bytes=chunk_bytes, regions=regions(sizes)
    )


async def stored(root: Path, runs: list[tuple[str, int, bytes]]) -> Path:
    """Store runs in a fresh cache, close it, return its folder."""
    cache = await open_cache(root)
    for region, first, data in runs:
        await cache.store(region, first, data)
    await cache.aclose()
    return cache.directory


def patch(path: Path, offset: int | None, data: bytes) -> None:
    """Overwrite bytes of a cache file by hand (``offset`` None: append)."""
    with open(path, "ab" if offset is None else "r+b") as f:
        if offset is not None:
            f.seek(offset)
        f.write(data)


async def test_round_trip_across_reopen(tmp_path: Path) -> None:
    await stored(tmp_path, [("user", 2, chunk(2) + chunk(3)), ("boot1", 0, chunk(0))])
    cache = await open_cache(tmp_path)
    assert cache.stats.discarded is False
    assert await cache.load("user", 0, 9) == {2: chunk(2), 3: chunk(3)}
    assert await cache.load("boot1", 0, 1) == {0: chunk(0)}
    assert cache.stats.chunks == 3
    assert cache.stats.bytes == 3 * CHUNK
    assert cache.stats.loaded_chunks == 3
    await cache.aclose()
    await cache.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await cache.load("user", 0, 0)


async def test_layout_and_permissions(tmp_path: Path) -> None:
    directory = await stored(tmp_path, [("user", 0, chunk(0))])
    assert directory.parent == tmp_path
    assert directory.stat().st_mode & 0o777 == 0o700
    meta = json.loads((directory / "meta.json").read_text())
    assert meta == {"format": 1, "device_id": DEVICE, "chunk_bytes": CHUNK, "regions": SIZES}
    assert (directory / "user.data").read_bytes() == chunk(0)
    assert (directory / "user.idx").read_bytes() == encode_record(0, CHUNK, zlib.crc32(chunk(0)))


async def test_partial_last_chunk(tmp_path: Path) -> None:
    tail = chunk(9, 11)
    await stored(tmp_path, [("user", 8, chunk(8) + tail)])
    cache = await open_cache(tmp_path)
    assert await cache.load("user", 8, 100) == {8: chunk(8), 9: tail}
    # A short chunk anywhere else, or a run past the end, is the caller's bug.
    with pytest.raises(ValueError, match="short chunk"):
        await cache.store("user", 3, chunk(3, 10))
    with pytest.raises(ValueError, match="leave the region"):
        await cache.store("user", 9, chunk(9))
    with pytest.raises(ValueError, match="not a region"):
        await cache.store("boot2", 0, chunk(0))
    await cache.aclose()


async def test_present_is_the_index(tmp_path: Path) -> None:
    cache = await open_cache(tmp_path)
    assert not cache.present("user", 1)
    await cache.store("user", 1, chunk(1) + chunk(2))
    assert cache.present("user", 1) and cache.present("user", 2)
    assert not cache.present("user", 3)
    assert not cache.present("nosuch", 1)
    await cache.aclose()
    cache = await open_cache(tmp_path)
    assert [i for i in range(10) if cache.present("user", i)] == [1, 2]
    await cache.aclose()


async def test_corrupt_data_byte_drops_that_chunk_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = await stored(tmp_path, [("user", 0, b"".join(chunk(i) for i in range(4)))])
    patch(directory / "user.data", 2 * CHUNK + 5, bytes([chunk(2)[5] ^ 0xFF]))
    cache = await open_cache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mtkfs.diskcache"):
        assert await cache.load("user", 0, 3) == {0: chunk(0), 1: chunk(1), 3: chunk(3)}
        assert await cache.load("user", 0, 3) == {0: chunk(0), 1: chunk(1), 3: chunk(3)}
    assert cache.stats.corrupt_chunks == 1
    assert not cache.present("user", 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checksum" in warnings[0].getMessage()
    # Fetched again, it is good again.
    await cache.store("user", 2, chunk(2))
    assert await cache.load("user", 2, 2) == {2: chunk(2)}
    await cache.aclose()


async def test_idx_truncated_mid_record(tmp_path: Path) -> None:
    runs = [("user", i, chunk(i)) for i in range(3)]
    directory = await stored(tmp_path, runs)
    idx = directory / "user.idx"
    os.truncate(idx, 2 * RECORD.size + 7)
    cache = await open_cache(tmp_path)
    assert await cache.load("user", 0, 9) == {0: chunk(0), 1: chunk(1)}
    # Appends after the torn record still land on record boundaries.
    await cache.store("user", 5, chunk(5))
    await cache.aclose()
    assert idx.stat().st_size % RECORD.size == 0
    cache = await open_cache(tmp_path)
    assert await cache.load("user", 0, 9) == {0: chunk(0), 1: chunk(1), 5: chunk(5)}
    await cache.aclose()


@pytest.mark.parametrize("garbage", [b"\x01" * 7, os.urandom(RECORD.size * 3 + 5)])
async def test_garbage_appended_to_idx(tmp_path: Path, garbage: bytes) -> None:
    directory = await stored(tmp_path, [("user", i, chunk(i)) for i in range(4)])
    # A whole record garbled in place (its data CRC field): rejected as a record, not as data.
    patch(directory / "user.idx", 2 * RECORD.size + 12, b"\x55\xaa")
    patch(directory / "user.idx", None, garbage)
    cache = await open_cache(tmp_path)
    assert not cache.present("user", 2)
    assert await cache.load("user", 0, 9) == {0: chunk(0), 1: chunk(1), 3: chunk(3)}
    assert cache.stats.corrupt_chunks == 0
    await cache.store("user", 2, chunk(2))
    await cache.aclose()
    cache = await open_cache(tmp_path)
    assert await cache.load("user", 0, 9) == {i: chunk(i) for i in range(4)}
    await cache.aclose()


async def test_data_truncated_at_open(tmp_path: Path) -> None:
    directory = await stored(tmp_path, [("user", 0, b"".join(chunk(i) for i in range(4)))])
    os.truncate(directory / "user.data", 2 * CHUNK + CHUNK // 2)
    cache = await open_cache(tmp_path)
    assert await cache.load("user", 0, 3) == {0: chunk(0), 1: chunk(1)}
    assert cache.stats.corrupt_chunks == 2
    await cache.aclose()


async def test_data_missing_or_truncated_while_open(tmp_path: Path) -> None:
    directory = await stored(tmp_path, [("user", 0, b"".join(chunk(i) for i in range(4)))])
    (directory / "boot1.data").unlink()
    cache = await open_cache(tmp_path)
    os.truncate(directory / "user.data", 3 * CHUNK - 1)
    assert await cache.load("user", 0, 3) == {0: chunk(0), 1: chunk(1)}
    assert cache.stats.corrupt_chunks == 2
    await cache.aclose()


async def test_crash_between_data_and_record(tmp_path: Path) -> None:
    directory = await stored(tmp_path, [("user", 0, chunk(0))])
    # Data written, record never appended: invisible.
    patch(directory / "user.data", 3 * CHUNK, chunk(3))
    # Records whose data write never happened: one for a hole, one over chunk 0's old bytes.
    patch(directory / "user.idx", None, encode_record(4, CHUNK, zlib.crc32(chunk(4))))
    patch(directory / "user.idx", None, encode_record(0, CHUNK, zlib.crc32(chunk(0, salt=1))))
    patch(directory / "user.data", 5 * CHUNK - 1, b"\0")  # chunk 4: a hole, not past the end
    cache = await open_cache(tmp_path)
    assert not cache.present("user", 3)
    assert await cache.load("user", 0, 9) == {}
    assert cache.stats.corrupt_chunks == 2
    assert not cache.present("user", 0) and not cache.present("user", 4)
    await cache.aclose()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"chunk_bytes": 2 * CHUNK}, "chunk size"),
        ({"sizes": {**SIZES, "user": SIZES["user"] + 1}}, "region user changed size"),
    ],
)
async def test_meta_mismatch_discards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, object], reason: str
) -> None:
    directory = await stored(tmp_path, [("user", 0, chunk(0) + chunk(1))])
    (directory / "stray").mkdir()
    with caplog.at_level(logging.WARNING, logger="mtkfs.diskcache"):
        cache = await open_cache(tmp_path, **change)  # type: ignore[arg-type]
    assert cache.stats.discarded and reason in cache.stats.discard_reason
    assert cache.stats.chunks == 0 and not cache.present("user", 0)
    assert await cache.load("user", 0, 0) == {}
    assert not (directory / "stray").exists()
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    await cache.aclose()


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (b'{"format": 1, "device_id": "other", "chunk_bytes": 16, "regions": {}}', "another"),
        (b'{"format": 2}', "unknown format"),
        (b"{not json", "not valid JSON"),
        (b'{"format": 1, "regions": {"../x": 5}}', "unusable regions"),
    ],
)
async def test_bad_meta_discards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, meta: bytes, reason: str
) -> None:
    directory = await stored(tmp_path, [("user", 0, chunk(0))])
    (directory / "meta.json").write_bytes(meta)
    with caplog.at_level(logging.WARNING, logger="mtkfs.diskcache"):
        cache = await open_cache(tmp_path)
    assert cache.stats.discarded and reason in cache.stats.discard_reason
    assert await cache.load("user", 0, 9) == {}
    assert sum(reason in r.getMessage() for r in caplog.records) == 1
    await cache.aclose()
    assert json.loads((directory / "meta.json").read_text())["device_id"] == DEVICE


async def test_new_region_keeps_the_rest(tmp_path: Path) -> None:
    await stored(tmp_path, [("user", 0, chunk(0))])
    cache = await open_cache(tmp_path, sizes={"user": SIZES["user"], "boot2": 64})
    assert not cache.stats.discarded
    assert await cache.load("user", 0, 0) == {0: chunk(0)}
    await cache.aclose()
    cache = await open_cache(tmp_path)  # boot2 is gone again: fine, it is remembered
    assert not cache.stats.discarded
    await cache.aclose()


@pytest.mark.parametrize("device_id", ["../../etc", "a/b:c", "x\0y", "é" * 10_000, "..", ""])
async def test_hostile_device_ids_stay_inside_root(tmp_path: Path, device_id: str) -> None:
    root = tmp_path / "root"
    cache = await open_cache(root, device_id=device_id)
    assert cache.directory.parent == root
    assert "/" not in cache.directory.name and "\0" not in cache.directory.name
    assert not cache.directory.name.startswith(".")
    assert len(cache.directory.name) <= 64
    await cache.store("boot1", 0, chunk(0))
    await cache.aclose()
    assert os.listdir(tmp_path) == ["root"]
    cache = await open_cache(root, device_id=device_id)
    assert await cache.load("boot1", 0, 0) == {0: chunk(0)}
    await cache.aclose()


def test_folder_names_differ() -> None:
    assert folder_name("a/b") != folder_name("a:b")
    assert folder_name("usb:0e8d:2000/1-3").startswith("usb_0e8d_2000_1-3-")


async def test_bad_region_name_and_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file name"):
        await open_cache(tmp_path, sizes={"../user": 10})
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError):
        await open_cache(tmp_path / "file")


async def test_second_user_is_refused(tmp_path: Path) -> None:
    cache = await open_cache(tmp_path)
    with pytest.raises(BusyError):
        await open_cache(tmp_path)
    await cache.aclose()
    cache = await open_cache(tmp_path)
    await cache.aclose()


async def test_concurrent_stores(tmp_path: Path) -> None:
    sizes = {"user": 16 * 8 * CHUNK}
    cache = await open_cache(tmp_path, sizes=sizes)

    async def writer(task: int) -> None:
        for k in range(8):
            index = k * 16 + task
            await cache.store("user", index, chunk(index))
            await trio.lowlevel.checkpoint()
            assert (await cache.load("user", index, index))[index] == chunk(index)

    async with trio.open_nursery() as nursery:
        for task in range(16):
            nursery.start_soon(writer, task)
        nursery.start_soon(cache.flush)
    await cache.aclose()
    cache = await open_cache(tmp_path, sizes=sizes)
    assert await cache.load("user", 0, 127) == {i: chunk(i) for i in range(128)}
    assert cache.stats.corrupt_chunks == 0
    await cache.aclose()


async def test_overwrite_while_loading_is_not_corruption(tmp_path: Path) -> None:
    """A load racing a store of new bytes for the same chunk must not call them corrupt."""
    big = 1 << 20  # big chunks: long writes, so that reads land in the middle of them
    versions = [bytes([1]) * big, bytes([2]) * big]
    cache = await open_cache(tmp_path, chunk_bytes=big, sizes={"user": big})
    await cache.store("user", 0, versions[0])
    seen: set[bytes] = set()

    async def overwrite() -> None:
        for k in range(200):
            await cache.store("user", 0, versions[k % 2])
            await trio.sleep(0.0002 * (k % 3))  # let loads start while the chunk is present

    async def read() -> None:
        for _ in range(200):
            seen.update((await cache.load("user", 0, 0)).values())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(overwrite)
        nursery.start_soon(read)
    assert seen <= set(versions)
    assert cache.stats.corrupt_chunks == 0
    assert await cache.load("user", 0, 0) == {0: versions[1]}
    await cache.aclose()


async def test_io_error_is_swallowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = await open_cache(tmp_path)
    # Make user.data's descriptor read-only behind the cache's back: every pwrite fails (EBADF).
    data_path = str(cache.directory / "user.data")
    (fd,) = [int(n) for n in os.listdir("/proc/self/fd") if readlink(n) == data_path]
    read_only = os.open(os.devnull, os.O_RDONLY)
    os.dup2(read_only, fd)
    os.close(read_only)
    with caplog.at_level(logging.WARNING, logger="mtkfs.diskcache"):
        await cache.store("user", 0, chunk(0))
        await cache.store("user", 1, chunk(1))
    assert cache.stats.io_errors == 2 and cache.stats.stored_chunks == 0
    assert not cache.present("user", 0)
    assert len(caplog.records) == 1 and "cannot write" in caplog.records[0].getMessage()
    await cache.aclose()


def readlink(fd_name: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd_name}")
    except OSError:
        return ""


# Random store sequences (with reopens in between): the last data stored for a chunk wins.
_SIZES = {"user": 7 * 8 + 3, "boot1": 16}
_RUN = st.tuples(st.sampled_from(sorted(_SIZES)), st.integers(0, 7), st.integers(1, 4))
_OPS = st.lists(st.one_of(st.tuples(_RUN, st.integers(0, 255)), st.just("reopen")), max_size=25)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS)
async def test_last_store_wins(ops: list[tuple[tuple[str, int, int], int] | str]) -> None:
    chunk_bytes = 8
    model: dict[tuple[str, int], bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = await open_cache(root, chunk_bytes=chunk_bytes, sizes=_SIZES)
        for op in ops:
            if isinstance(op, str):
                await cache.aclose()
                cache = await open_cache(root, chunk_bytes=chunk_bytes, sizes=_SIZES)
                continue
            (region, first, count), salt = op
            last_chunk = -(-_SIZES[region] // chunk_bytes) - 1
            first = min(first, last_chunk)
            last = min(first + count - 1, last_chunk)
            parts = [
                chunk(i, min(chunk_bytes, _SIZES[region] - i * chunk_bytes), salt)
                for i in range(first, last + 1)
            ]
            await cache.store(region, first, b"".join(parts))
            model.update({(region, i): part for i, part in enumerate(parts, first)})
        await cache.aclose()
        cache = await open_cache(root, chunk_bytes=chunk_bytes, sizes=_SIZES)
        found = {(r, i): data for r in _SIZES for i, data in (await cache.load(r, 0, 99)).items()}
        await cache.aclose()
    assert found == model
