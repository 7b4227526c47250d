"""Commands on a phone through the adb server: which service carries them, root, and the two
ways data crosses when the service is not binary-safe.

Every operation runs on its own connection to the server (the adb client's way), so a phone
that goes away breaks one command, never the transport.

Services by Android generation (adb.md §1.5):

* ``shell,v2`` (7+): framed stdout/stderr, exit status, stdin — reads and writes run here;
* ``exec:`` (5–6): a raw PTY, stderr merged, no exit status (an end marker brings it back) —
  reads only; writes go through a file pushed with ``sync:`` (:meth:`Shell.push_then`);
* legacy ``shell:`` (≤ 4.4): a cooked PTY that turns LF into CRLF — text only. Binary reads go
  through a temp file on the phone fetched with ``sync:`` RECV (:meth:`Shell.pull_via_file`),
  which is framed and therefore byte-exact; writes the other way round.

Commands are built by the transport from validated block-device paths, integers and fixed
text; this module adds the ``su`` wrapping (one level of single quotes, :func:`sh_quote`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mtkfs.errors import AuthRequiredError, LocalProtocolError, TransportError
from mtkfs.links.base import drive
from mtkfs.links.tcp import TcpLink
from mtkfs.protocols import adb, adb_sync
from mtkfs.protocols.base import Op

T = TypeVar("T")
Runner = Callable[[Op[Any]], Any]

#: Where a root shell may always write and adbd (the ``shell`` user) may always read: Android's
#: own scratch folder (mode 0771, owner shell), present on every version.
TEMP_DIR = "/data/local/tmp"

#: Hash tools, best first: Android 6+ toybox has them as commands, older phones often only in a
#: busybox the rooting installed (adb.md §5.3). Each is probed on empty input, so a tool that
#: exists but answers nonsense is never used.
HASH_TOOLS: tuple[tuple[str, str], ...] = (
    ("sha256sum", "sha256"),
    ("toybox sha256sum", "sha256"),
    ("busybox sha256sum", "sha256"),
    ("sha1sum", "sha1"),
    ("toybox sha1sum", "sha1"),
    ("busybox sha1sum", "sha1"),
    ("md5sum", "md5"),
    ("toybox md5sum", "md5"),
    ("busybox md5sum", "md5"),
)


def runner(address: tuple[str, int], timeout_s: float) -> Runner:
    """Run one operation on a fresh connection to the adb server."""

    async def run(op: Op[T]) -> T:
        link = await TcpLink.connect(*address, what="adb server")
        try:
            return await drive(op, link, timeout_s=timeout_s)
        finally:
            await link.aclose()

    return run


def hash_probe_command() -> str:
    """One command that runs every candidate tool on empty input, one ``tool=output`` line
    each (fixed text: nothing from the device goes into it)."""
    tools = " ".join(f'"{tool}"' for tool, _ in HASH_TOOLS)  # letters and spaces only
    return f'for t in {tools}; do echo "$t=$($t </dev/null 2>/dev/null)"; done'


def parse_hash_probe(text: str) -> tuple[str, str] | None:
    """(tool, hashlib name) of the first tool whose digest of nothing is right; None if none."""
    answers: dict[str, str] = {}
    for line in text.splitlines():
        tool, sep, output = line.partition("=")
        if sep:
            answers.setdefault(tool.strip(), output.strip())
    for tool, algorithm in HASH_TOOLS:
        words = answers.get(tool, "").split()
        if words and words[0].lower() == hashlib.new(algorithm, b"").hexdigest():
            return tool, algorithm
    return None


def parse_digest(text: str, algorithm: str) -> bytes:
    """The digest a ``…sum`` tool printed for stdin (``<hex>  -``); TransportError otherwise."""
    words = text.split()
    size = hashlib.new(algorithm).digest_size
    if not words or len(words[0]) != 2 * size:
        raise TransportError(f"the phone's {algorithm} tool printed {adb.printable(text, 120)!r}")
    try:
        return bytes.fromhex(words[0])
    except ValueError as exc:
        raise TransportError(f"the phone's {algorithm} tool printed {words[0]!r:.80}") from exc


class Shell:
    """Commands on one phone through the chosen service, as root when ``root_style`` says.

    ``record`` (optional) collects every command line as sent, for the transport's own
    diagnostics and the tests' hostile-string checks.
    """

    def __init__(
        self,
        run: Runner,
        serial: str,
        service: str,
        root_style: str,
        record: list[str] | None = None,
    ) -> None:
        self._run, self.serial, self.service, self.root_style = run, serial, service, root_style
        self._record = record

    def wrap(self, command: str) -> str:
        """``command`` as the root style runs it (``su -c '…'`` or ``su 0 sh -c '…'``)."""
        if self.root_style == "su -c":
            wrapped = f"su -c {adb.sh_quote(command)}"
        elif self.root_style == "su 0":
            wrapped = f"su 0 sh -c {adb.sh_quote(command)}"
        else:
            wrapped = command
        if self._record is not None:
            self._record.append(wrapped)
        return wrapped

    async def _exec(self, command: str, length_bytes: int | None) -> adb.ShellResult:
        wrapped = self.wrap(command)
        if self.service == "shell,v2":
            result: adb.ShellResult = await self._run(
                adb.shell_v2(self.serial, wrapped, expect_stdout_bytes=length_bytes)
            )
            return result
        if length_bytes is None:
            text: adb.ShellResult = await self._run(adb.legacy_shell(self.serial, wrapped))
            return text
        if self.service != "exec":
            raise TransportError(f"{self.serial}: binary output over legacy shell: (a bug)")
        data: adb.ShellResult = await self._run(adb.exec_read(self.serial, wrapped, length_bytes))
        return data

    async def text(self, command: str, *, check: bool = True) -> str:
        """A command's output as text (CRLF from an old PTY undone); exit status 0 required
        unless ``check`` is False."""
        result = await self._exec(command, None)
        if check and result.exit_status != 0:
            raise TransportError(
                f"{self.serial}: {command!r} failed (exit {result.exit_status}): "
                f"{adb.printable(result.stderr or result.stdout)}"
            )
        return result.stdout.decode("utf-8", "replace").replace("\r\n", "\n")

    async def binary(self, command: str, length_bytes: int) -> bytes:
        """Exactly ``length_bytes`` of a command's stdout (shell v2 or exec: only)."""
        result = await self._exec(command, length_bytes)
        if result.exit_status != 0 or len(result.stdout) != length_bytes:
            raise TransportError(
                f"{self.serial}: {command!r} gave {len(result.stdout)} of {length_bytes} bytes "
                f"(exit {result.exit_status}): {adb.printable(result.stderr)}"
            )
        return result.stdout

    async def feed(self, command: str, data: bytes) -> None:
        """Run ``command`` with ``data`` on its stdin (shell v2 only: exec: and legacy shell
        lose stdin to their PTY); exit status 0 required."""
        result: adb.ShellResult = await self._run(
            adb.shell_v2(self.serial, self.wrap(command), stdin=data)
        )
        if result.exit_status != 0:
            raise TransportError(
                f"{self.serial}: {command!r} failed (exit {result.exit_status}): "
                f"{adb.printable(result.stderr or result.stdout)}"
            )

    async def pull_via_file(self, produce: str, temp_path: str, length_bytes: int) -> bytes:
        """Run ``produce`` (which must write ``temp_path``) as root, make the file readable for
        adbd, and fetch it with ``sync:`` RECV: exactly ``length_bytes`` or TransportError.

        The file is overwritten by the next call and removed by :meth:`remove`.
        """
        path = _temp_path(temp_path)
        await self.text(f"{produce} && chmod 644 {path}")
        data: bytes = await self._run(
            adb_sync.sync_recv(self.serial, temp_path, max_bytes=length_bytes)
        )
        if len(data) != length_bytes:
            raise TransportError(
                f"{self.serial}: {produce!r} left {len(data)} of {length_bytes} bytes in "
                f"{temp_path} (is {TEMP_DIR} full?)"
            )
        return data

    async def push_then(self, temp_path: str, data: bytes, consume: str) -> None:
        """Push ``data`` to ``temp_path`` with ``sync:`` SEND (framed: byte-exact, unlike a
        PTY's stdin), then run ``consume`` as root, remove the file, and require that
        ``consume`` succeeded."""
        await self._run(adb_sync.sync_send(self.serial, temp_path, data, mode=0o100600))
        path = _temp_path(temp_path)
        await self.text(f"{consume}; mtkfs_w=$?; rm -f {path}; [ $mtkfs_w = 0 ]")

    async def remove(self, path: str) -> None:
        """``rm -f`` a temp file of ours (best effort: the phone may be gone)."""
        try:
            await self.text(f"rm -f {_temp_path(path)}", check=False)
        except TransportError:
            pass


def temp_file_name(what: str) -> str:
    """A fresh name in :data:`TEMP_DIR` for this mount (random: two mounts never collide)."""
    return _temp_path(f"{TEMP_DIR}/mtkfs-{what}-{secrets.token_hex(6)}.bin")


def _temp_path(path: str) -> str:
    """``path`` if it is one of :func:`temp_file_name`'s (safe in a command unquoted)."""
    if not re.fullmatch(re.escape(TEMP_DIR) + r"/mtkfs-[a-z]{1,10}-[0-9a-f]{12}\.bin", path):
        raise LocalProtocolError(f"not an mtkfs temp file: {path!r:.80}")
    return path


async def find_root(sh: Shell, restart_as_root: Callable[[], Awaitable[bool]] | None = None) -> str:
    """adb.md §5.4's order: adbd already root (``id -u`` = 0); ``adb root`` (a userdebug
    build restarts adbd as root: ``restart_as_root`` asks and waits for the phone to come
    back, returning True if it did); ``su -c`` (Magisk, SuperSU, KernelSU); ``su 0`` (AOSP)."""
    if await _uid_is_zero(sh, "id -u"):
        return "adbd"
    if restart_as_root is not None and await restart_as_root() and await _uid_is_zero(sh, "id -u"):
        return "adbd"
    for style, command in (("su -c", "su -c 'id -u'"), ("su 0", "su 0 id -u")):
        if await _uid_is_zero(sh, command):
            return style
    raise AuthRequiredError(
        f"{sh.serial}: no root (id -u is not 0, adb root is refused on this build, and neither "
        "su -c nor su 0 gave root): the block devices cannot be read. Root the phone "
        "(Magisk), or use a userdebug build (adb root); or read it in BROM/preloader mode "
        "instead (mtkfs mount da:)"
    )


async def _uid_is_zero(sh: Shell, command: str) -> bool:
    try:
        out = await sh.text(command, check=False)
    except TransportError:
        return False
    return out.strip().splitlines()[-1:] == ["0"]
