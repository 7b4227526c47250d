"""The MediaTek BootROM / preloader download protocol, host side, sans-I/O.

A phone that is switched off and plugged in with Volume-Down held shows up as the BootROM
(0e8d:0003); without buttons its preloader listens for a few seconds (0e8d:2000). Both speak the
same small command protocol (../shared/reference/mtkclient.md §2; MediaTek's own preloader
``download.c`` is the device side): a four-byte handshake, then one-byte commands that the device
echoes, big-endian u32 parameters that it echoes too, and u16 big-endian statuses where
``status <= 0xFF`` means success. Its job for mtkfs is to identify the chip, keep the watchdog
from resetting the phone, and upload + start the Download Agent (DA1), which then takes over the
line.

Each operation is a generator (see :mod:`mtkfs.protocols.base`): run it over a link with
``drive()`` or against :mod:`mtkfs.testing.sim_brom` with ``run_pair()``. Nothing here touches a
clock: where mtkclient relies on timeouts (flushing stale bytes, waiting for a swallowed byte),
the operations instead reason about the bytes the device can send, and a silent device is the
driver's timeout to report.

Security is reported, never bypassed: a device that wants serial-link authentication (SLA) or an
authorised DA (DAA) stops the upload before any DA byte is sent (:class:`AuthRequiredError`).
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mtkfs.errors import AuthRequiredError, LocalProtocolError, RemoteProtocolError
from mtkfs.protocols.base import Op, Send, recv_exact

# The status tables live in brom_status; `X as X` re-exports the names callers import from here.
from mtkfs.protocols.brom_status import RETRY_ADVICE, SIGNED_DA_ADVICE, check_status
from mtkfs.protocols.brom_status import STATUS_NAMES as STATUS_NAMES
from mtkfs.protocols.brom_status import status_error as status_error
from mtkfs.protocols.brom_status import status_name as status_name
from mtkfs.protocols.chips import Chip, chip_for

log = logging.getLogger(__name__)


class Cmd(enum.IntEnum):
    """The BROM/preloader commands mtkfs uses (mtkclient ``Preloader.Cmd``)."""

    READ16 = 0xD0
    READ32 = 0xD1
    WRITE16 = 0xD2
    WRITE32 = 0xD4
    JUMP_DA = 0xD5
    SEND_DA = 0xD7
    GET_TARGET_CONFIG = 0xD8
    JUMP_DA64 = 0xDE
    GET_ME_ID = 0xE1
    GET_SOC_ID = 0xE7
    GET_HW_SW_VER = 0xFC
    GET_HW_CODE = 0xFD
    GET_BL_VER = 0xFE
    GET_VERSION = 0xFF


#: The start command; the device answers each byte with its complement (5F F5 AF FA).
HANDSHAKE = bytes([0xA0, 0x0A, 0x50, 0x05])
#: Bytes the handshake skips as left-over output (a preloader's "READY" banners) before it gives
#: up: generous, the banner repeats every 20 ms while the preloader waits.
HANDSHAKE_NOISE_LIMIT_BYTES = 256
#: ME_ID is 16 bytes and SOC_ID 32; a longer length field is a garbled reply, not an ID.
MAX_ID_BYTES = 256
#: SEND_DA data goes in pieces of this size, each followed by a zero-length packet (mtkclient).
DA_CHUNK_BYTES = 0x2000
#: JUMP_DA64's architecture byte: AArch64.
AARCH64 = 0x01

# --------------------------------------------------------------------------------------------
# Results


class TargetBit(enum.IntFlag):
    """GET_TARGET_CONFIG bits (mtkclient ``get_target_config``; SBC/SLA/DAA also in
    MediaTek's ``download.c``)."""

    SBC = 0x01
    SLA = 0x02
    DAA = 0x04
    EPP = 0x08
    ROOT_CERT = 0x10
    MEM_READ_AUTH = 0x20
    MEM_WRITE_AUTH = 0x40
    CMD_C8_BLOCKED = 0x80


#: What each bit means, for messages.
TARGET_BIT_TEXT: dict[TargetBit, str] = {
    TargetBit.SBC: "secure boot (SBC)",
    TargetBit.SLA: "serial-link authentication (SLA)",
    TargetBit.DAA: "DA authentication (DAA)",
    TargetBit.EPP: "EPP parameters",
    TargetBit.ROOT_CERT: "root certificate required",
    TargetBit.MEM_READ_AUTH: "memory-read authentication",
    TargetBit.MEM_WRITE_AUTH: "memory-write authentication",
    TargetBit.CMD_C8_BLOCKED: "command 0xC8 blocked",
}


@dataclass(frozen=True)
class TargetConfig:
    """The device's security configuration (GET_TARGET_CONFIG's u32)."""

    raw: int

    def has(self, bit: TargetBit) -> bool:
        """Whether ``bit`` is set."""
        return bool(self.raw & bit)

    @property
    def sbc(self) -> bool:
        """Secure boot: images must be signed (an unsigned DA may still run if DAA is off)."""
        return self.has(TargetBit.SBC)

    @property
    def sla(self) -> bool:
        """Serial-link authentication: a challenge signed with the vendor's key first."""
        return self.has(TargetBit.SLA)

    @property
    def daa(self) -> bool:
        """DA authentication: only a DA signed for this device runs."""
        return self.has(TargetBit.DAA)

    def names(self) -> list[str]:
        """The set bits in words, lowest first (``["secure boot (SBC)", ...]``)."""
        return [text for bit, text in TARGET_BIT_TEXT.items() if self.raw & bit]

    def __str__(self) -> str:
        return f"{self.raw:#x} ({', '.join(self.names()) or 'open'})"


@dataclass(frozen=True)
class HwSwVersion:
    """GET_HW_SW_VER: the chip's sub code, hardware and software (ROM) versions."""

    hw_sub_code: int
    hw_ver: int
    sw_ver: int


@dataclass(frozen=True)
class DeviceInfo:
    """What :func:`identify` learnt; the DA file's entry is chosen from these codes.

    Attributes:
        mode: ``brom`` (GET_BL_VER echoed) or ``preloader``.
        bl_ver: the preloader's version byte; None in BROM mode.
        version: GET_VERSION's byte (BROM version; a preloader echoes 0xFF).
        me_id, soc_id: empty where the device does not offer them.
        watchdog_disabled: the watchdog write was accepted (False: not needed or refused).
    """

    hw_code: int
    chip: Chip
    hw_sub_code: int
    hw_ver: int
    sw_ver: int
    mode: str
    bl_ver: int | None
    version: int
    target_config: TargetConfig
    me_id: bytes = b""
    soc_id: bytes = b""
    watchdog_disabled: bool = False

    @property
    def is_brom(self) -> bool:
        """Talking to the BootROM itself (not the preloader)."""
        return self.mode == "brom"


# --------------------------------------------------------------------------------------------
# Framing helpers


def _u16() -> Op[int]:
    return int.from_bytes((yield from recv_exact(2)), "big")


def _u32() -> Op[int]:
    return int.from_bytes((yield from recv_exact(4)), "big")


def _echoed(data: bytes, what: str) -> Op[None]:
    """Send ``data`` and expect it back unchanged (commands and their parameters)."""
    yield Send(data)
    got = yield from recv_exact(len(data))
    if got != data:
        raise RemoteProtocolError(
            f"{what}: the device answered {got.hex(' ')} instead of echoing {data.hex(' ')}: "
            "it is not in BROM/preloader command mode (a half-finished earlier session, or the "
            f"DA is already running); {RETRY_ADVICE}"
        )


def _command(cmd: Cmd) -> Op[None]:
    yield from _echoed(bytes([cmd]), cmd.name)


def _echoed_u32(value: int, what: str) -> Op[None]:
    yield from _echoed(value.to_bytes(4, "big"), what)


# --------------------------------------------------------------------------------------------
# Handshake


def handshake(
    *,
    preloader_prefix: bool = False,
    max_attempts: int = 5,
    noise_limit_bytes: int = HANDSHAKE_NOISE_LIMIT_BYTES,
) -> Op[int]:
    """Send A0 0A 50 05 one byte at a time, expecting 5F F5 AF FA; returns the attempts used.

    The device answers every handshake byte with one byte: the complement when it was the next
    expected one, otherwise the byte plus one — and then expects A0 again (``download.c``). So a
    reply of ``byte + 1`` means "start over" (the device was mid-sequence from an earlier
    session), and any other value cannot be an answer to this byte: it is left-over output
    (a preloader's ``READY`` banner, bytes of an aborted session) and is skipped, up to
    ``noise_limit_bytes``. That replaces mtkclient's timed flush read, and it also re-aligns the
    exchange when a stale reply is queued ahead of ours.

    ``preloader_prefix``: first send one lone A0, as mtkclient does for every PID but the BROM's
    (0x0003 and Sony's). A listening preloader swallows that byte silently to enter its
    download handler; a BROM answers it, and the resync above absorbs the extra reply, so the
    prefix is safe either way. Without it a preloader swallows our first A0 and never answers:
    the driver's timeout reports that.
    """
    if preloader_prefix:
        yield Send(HANDSHAKE[:1])
    budget = noise_limit_bytes
    last = "no reply"
    for attempt in range(1, max_attempts + 1):
        for sent in HANDSHAKE:
            yield Send(bytes([sent]))
            reply, skipped = yield from _handshake_reply(sent, budget, noise_limit_bytes)
            budget -= skipped
            if reply != ~sent & 0xFF:
                last = f"{sent:#04x} answered {reply:#04x}"
                log.debug("handshake attempt %d: %s, starting over", attempt, last)
                break
        else:
            return attempt
    raise RemoteProtocolError(
        f"no BROM/preloader handshake after {max_attempts} attempts (last: {last}): power the "
        "phone off, then plug it in holding Volume-Down (BROM) or no button (preloader); make "
        "sure no other program (ModemManager, mtkclient) has the port open"
    )


def _handshake_reply(sent: int, noise_budget: int, limit: int) -> Op[tuple[int, int]]:
    """The device's answer to handshake byte ``sent`` and how many stale bytes came first;
    more than ``noise_budget`` of them (of ``limit`` in the whole handshake) is an error."""
    answers = {~sent & 0xFF, (sent + 1) & 0xFF}
    skipped = 0
    while True:
        (reply,) = yield from recv_exact(1)
        if reply in answers:
            return reply, skipped
        skipped += 1
        if skipped > noise_budget:
            raise RemoteProtocolError(
                f"handshake: the device sent more than {limit} bytes that are no handshake "
                f"answers (last {reply:#04x}): it is not a MediaTek BROM or "
                "preloader in download mode, or another program is talking to it"
            )


# --------------------------------------------------------------------------------------------
# Identification


def get_hw_code() -> Op[int]:
    """GET_HW_CODE: the chip's BROM code (0x0766 = MT6765), then a status."""
    yield from _command(Cmd.GET_HW_CODE)
    hw_code = yield from _u16()
    check_status((yield from _u16()), "GET_HW_CODE")
    return hw_code


def get_hw_sw_ver() -> Op[HwSwVersion]:
    """GET_HW_SW_VER: sub code, hardware and software versions (DA entries are chosen by them)."""
    yield from _command(Cmd.GET_HW_SW_VER)
    raw = yield from recv_exact(8)
    sub_code, hw_ver, sw_ver, status = struct.unpack(">4H", raw)
    check_status(status, "GET_HW_SW_VER")
    return HwSwVersion(sub_code, hw_ver, sw_ver)


def get_target_config() -> Op[TargetConfig]:
    """GET_TARGET_CONFIG: the security bits (u32), then a status."""
    yield from _command(Cmd.GET_TARGET_CONFIG)
    raw = yield from _u32()
    check_status((yield from _u16()), "GET_TARGET_CONFIG")
    return TargetConfig(raw)


def get_bl_ver() -> Op[int | None]:
    """GET_BL_VER, not echoed: the BootROM answers 0xFE itself (→ None), a preloader its
    version byte. This is how a client tells the two apart (mtkclient ``get_blver``)."""
    yield Send(bytes([Cmd.GET_BL_VER]))
    (reply,) = yield from recv_exact(1)
    return None if reply == Cmd.GET_BL_VER else reply


def get_version() -> Op[int]:
    """GET_VERSION, not echoed: one byte (the BROM's version; a preloader that does not know
    the command echoes 0xFF, which reads the same)."""
    yield Send(bytes([Cmd.GET_VERSION]))
    (reply,) = yield from recv_exact(1)
    return reply


def get_me_id() -> Op[bytes]:
    """GET_ME_ID: u32 length, the ID (16 bytes), a status. Old preloaders (version ≤ 2) do not
    know it and would never answer: :func:`identify` does not ask them."""
    return (yield from _get_id(Cmd.GET_ME_ID))


def get_soc_id() -> Op[bytes]:
    """GET_SOC_ID: as GET_ME_ID, 32 bytes; only newer BROMs (``Chip.reads_soc_id``) know it."""
    return (yield from _get_id(Cmd.GET_SOC_ID))


def _get_id(cmd: Cmd) -> Op[bytes]:
    yield from _command(cmd)
    size_bytes = yield from _u32()
    if size_bytes > MAX_ID_BYTES:
        raise RemoteProtocolError(
            f"{cmd.name}: the device announced a {size_bytes}-byte ID (at most {MAX_ID_BYTES} "
            f"expected): a garbled reply; {RETRY_ADVICE}"
        )
    ident = yield from recv_exact(size_bytes)
    check_status((yield from _u16()), cmd.name)
    return ident


# --------------------------------------------------------------------------------------------
# Registers


def read32(addr: int, count: int = 1) -> Op[list[int]]:
    """READ32: ``count`` u32 words from ``addr``."""
    return (yield from _read(Cmd.READ32, addr, count, 4))


def read16(addr: int, count: int = 1) -> Op[list[int]]:
    """READ16: ``count`` u16 half-words from ``addr``."""
    return (yield from _read(Cmd.READ16, addr, count, 2))


def _read(cmd: Cmd, addr: int, count: int, width_bytes: int) -> Op[list[int]]:
    """Command, echoed address and count, a status (an error ends the command there), the
    values big-endian, a second status."""
    if count < 1:
        raise LocalProtocolError(f"{cmd.name}: count must be at least 1, not {count}")
    what = f"{cmd.name} {addr:#010x}"
    yield from _command(cmd)
    yield from _echoed_u32(addr, f"{what} address")
    yield from _echoed_u32(count, f"{what} count")
    check_status((yield from _u16()), what)
    raw = yield from recv_exact(count * width_bytes)
    check_status((yield from _u16()), what)
    return [
        int.from_bytes(raw[i : i + width_bytes], "big") for i in range(0, len(raw), width_bytes)
    ]


def write32(addr: int, values: int | Sequence[int]) -> Op[None]:
    """WRITE32: store u32 ``values`` from ``addr`` on."""
    check_status((yield from _write(Cmd.WRITE32, addr, values, 4)), f"WRITE32 {addr:#010x}")


def write16(addr: int, values: int | Sequence[int]) -> Op[None]:
    """WRITE16: store u16 ``values`` from ``addr`` on (MT6575/77 watchdog)."""
    check_status((yield from _write(Cmd.WRITE16, addr, values, 2)), f"WRITE16 {addr:#010x}")


def _write(cmd: Cmd, addr: int, values: int | Sequence[int], width_bytes: int) -> Op[int]:
    """Command, echoed address and count, a status (an error ends the command there: it is
    returned), then each value echoed, then the final status (returned)."""
    words = [values] if isinstance(values, int) else list(values)
    if not words:
        raise LocalProtocolError(f"{cmd.name}: nothing to write")
    what = f"{cmd.name} {addr:#010x}"
    yield from _command(cmd)
    yield from _echoed_u32(addr, f"{what} address")
    yield from _echoed_u32(len(words), f"{what} count")
    status = yield from _u16()
    if status > 0xFF:
        return status
    for word in words:
        yield from _echoed(word.to_bytes(width_bytes, "big"), f"{what} value")
    return (yield from _u16())


def disable_watchdog(chip: Chip) -> Op[bool]:
    """Stop the chip's watchdog so the phone does not reset mid-session; True if accepted.

    Best effort, as in mtkclient: a device that refuses (memory-write authentication) is still
    identified, and its security bits then explain what it needs. 64-bit BROMs keep the
    watchdog off themselves (:func:`identify` skips them).
    """
    if chip.watchdog_addr is None:
        return False
    cmd, width = (Cmd.WRITE16, 2) if chip.watchdog_16bit else (Cmd.WRITE32, 4)
    status = yield from _write(cmd, chip.watchdog_addr, chip.watchdog_value, width)
    if status <= 0xFF and chip.watchdog_extra_addr is not None:
        status = yield from _write(Cmd.WRITE32, chip.watchdog_extra_addr, 0x22000000, 4)
    if status > 0xFF:
        log.warning("the device refused to stop its watchdog: %s", status_name(status))
        return False
    return True


# --------------------------------------------------------------------------------------------
# Download Agent


def xor16_checksum(data: bytes) -> int:
    """SEND_DA's checksum: XOR of the data as little-endian u16 words, an odd last byte counting
    as a word of its own (as if padded with one 0x00)."""
    padded = data + b"\x00" if len(data) % 2 else data
    checksum = 0
    for (word,) in struct.iter_unpack("<H", padded):
        checksum ^= word
    return checksum


def send_da(load_addr: int, data: bytes, sig_len: int) -> Op[int]:
    """SEND_DA: upload DA1 (``data`` includes its trailing ``sig_len``-byte signature) to
    ``load_addr``; returns the checksum both sides agreed on.

    The first status comes before any DA byte: SLA/DAA demands (0x1D0D, 0x1D15, 0x2001 …) stop
    here with :class:`AuthRequiredError` and nothing is uploaded. After the upload the device
    returns its checksum and a second status, where a signature it rejects shows up as 0x2001.

    Checksum rule: mtkclient only warns on a mismatch; mtkfs fails (RemoteProtocolError: the
    link corrupted the upload, retrying helps), except when the device returns 0, which some
    BROMs do instead of computing it (mtkclient ignores 0 too) — then the second status and the
    DA's own sync byte are the only check.
    """
    if not 0 <= sig_len <= len(data):
        raise LocalProtocolError(
            f"SEND_DA: signature length {sig_len} does not fit the {len(data)}-byte DA"
        )
    payload = data + b"\x00" if len(data) % 2 else data
    yield from _command(Cmd.SEND_DA)
    yield from _echoed_u32(load_addr, "SEND_DA load address")
    yield from _echoed_u32(len(payload), "SEND_DA length")
    yield from _echoed_u32(sig_len, "SEND_DA signature length")
    check_status((yield from _u16()), "SEND_DA")
    for offset in range(0, len(payload), DA_CHUNK_BYTES):
        yield Send(payload[offset : offset + DA_CHUNK_BYTES], zlp=True)
    device_checksum = yield from _u16()
    status = yield from _u16()
    ours = xor16_checksum(payload)
    if device_checksum not in (ours, 0):
        raise RemoteProtocolError(
            f"SEND_DA: the device's checksum {device_checksum:#06x} differs from ours "
            f"{ours:#06x}: the upload was corrupted on the way; {RETRY_ADVICE}"
        )
    if device_checksum == 0 and ours != 0:
        log.debug("SEND_DA: the device returned checksum 0 (not computed); relying on status")
    check_status(status, "SEND_DA (after the upload)")
    return ours


def jump_da(addr: int) -> Op[None]:
    """JUMP_DA: start the uploaded 32-bit DA1 at ``addr``; from then on the DA owns the line."""
    yield from _command(Cmd.JUMP_DA)
    yield from _echoed_u32(addr, "JUMP_DA address")
    check_status((yield from _u16()), "JUMP_DA")


def jump_da64(addr: int) -> Op[None]:
    """JUMP_DA64: as JUMP_DA, plus an echoed architecture byte (0x01: AArch64)."""
    yield from _command(Cmd.JUMP_DA64)
    yield from _echoed_u32(addr, "JUMP_DA64 address")
    yield from _echoed(bytes([AARCH64]), "JUMP_DA64 architecture")
    check_status((yield from _u16()), "JUMP_DA64")


# --------------------------------------------------------------------------------------------
# The whole bring-up


def identify(*, preloader_prefix: bool = False, disable_wdt: bool = True) -> Op[DeviceInfo]:
    """mtkclient's ``Preloader.init`` sequence, as far as a client without exploits needs it.

    Handshake → GET_HW_CODE → chip → watchdog off (not on 64-bit BROMs) → GET_TARGET_CONFIG →
    GET_BL_VER → GET_VERSION → GET_HW_SW_VER → GET_ME_ID → GET_SOC_ID. The byte sequence follows
    mtkclient's, which is what real devices are known to accept: ME_ID and SOC_ID are each
    preceded by another GET_BL_VER, and are skipped where the device would never answer (a
    preloader of version ≤ 2; SOC_ID on chips without it).
    """
    yield from handshake(preloader_prefix=preloader_prefix)
    hw_code = yield from get_hw_code()
    chip = chip_for(hw_code)
    watchdog_off = False
    if disable_wdt and not chip.brom64:
        watchdog_off = yield from disable_watchdog(chip)
    target = yield from get_target_config()
    bl_ver = yield from get_bl_ver()
    version = yield from get_version()
    versions = yield from get_hw_sw_ver()
    me_id = soc_id = b""
    if bl_ver is None or bl_ver > 2:
        yield from get_bl_ver()
        me_id = yield from get_me_id()
        if chip.reads_soc_id:
            yield from get_bl_ver()
            soc_id = yield from get_soc_id()
    info = DeviceInfo(
        hw_code=hw_code,
        chip=chip,
        hw_sub_code=versions.hw_sub_code,
        hw_ver=versions.hw_ver,
        sw_ver=versions.sw_ver,
        mode="brom" if bl_ver is None else "preloader",
        bl_ver=bl_ver,
        version=version,
        target_config=target,
        me_id=me_id,
        soc_id=soc_id,
        watchdog_disabled=watchdog_off,
    )
    log.info("%s in %s mode, target config %s", chip.describe(), info.mode, target)
    return info


def check_security(info: DeviceInfo, *, da_signed: bool = False) -> None:
    """Raise AuthRequiredError when the device will not run the DA we have, before uploading.

    * SLA in BROM mode: the BROM wants a challenge signed with the vendor's private key, which
      mtkfs does not have and will not forge. (A preloader that reports SLA does not enforce it
      at SEND_DA; its status decides.)
    * DAA with an unsigned DA (``da_signed`` False, i.e. the DA entry has no signature): the
      device runs only DAs signed for it. A signed DA is tried: the device's verdict (0x2001)
      then comes from :func:`send_da`.
    * Secure boot (SBC) alone does not stop an upload: with DAA off the BootROM runs an
      unsigned DA, so it is only named alongside the blocking bits.
    """
    target = info.target_config
    blocking = (info.is_brom and target.sla) or (target.daa and not da_signed)
    if not blocking:
        return
    need = "an auth file (SLA) and a signed DA" if info.is_brom and target.sla else "a signed DA"
    raise AuthRequiredError(
        f"{info.chip.describe()} in {info.mode} mode requires authorisation: target config "
        f"{target}. It needs {need} authorised for this device; {SIGNED_DA_ADVICE}. mtkfs sends no "
        "DA byte to a device that has not agreed to run it."
    )
