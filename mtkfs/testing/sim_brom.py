"""A simulated MediaTek BootROM / preloader: the device side of :mod:`mtkfs.protocols.brom`.

Why: the BROM protocol is what every ``da:`` mount starts with, and hardware is not available to
tests. This generator answers byte for byte as the real thing does — modelled on MediaTek's own
preloader ``download.c`` (handshake replies, echo discipline, one status and nothing more when
an argument check fails, the XOR checksum, "no jump without a verified DA") and on mtkclient's
reference (BROM GET_BL_VER echo, SEND_DA security statuses) — so the host code that passes here
speaks the wire protocol, not a convenient imitation of it.

Use: ``sim = SimBrom(hw_code=0x0766); run_pair(identify(), sim.run())``, then look at what the
device saw (``sim.writes``, ``sim.da_bytes``, ``sim.commands``). After a successful JUMP_DA the
generator continues as ``da_device(uploaded_da_bytes)`` — the hook where the Download Agent
simulator (``mtkfs.testing.sim_xflash``) takes over the line.

Fault hooks (:class:`SimFaults`) make it misbehave the ways devices and links do: left-over
bytes before the handshake, a device stuck mid-handshake, wrong echoes, garbage replies,
silence, injected statuses and checksums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from mtkfs.protocols.base import Op, Recv, Send, recv_exact
from mtkfs.protocols.chips import chip_for

#: The host's start command, answered byte by byte with complements.
START_COMMAND = bytes([0xA0, 0x0A, 0x50, 0x05])
#: What a listening preloader prints while it waits for a tool (``HSHK_COM_READY``).
READY_BANNER = b"READY"
#: The largest DA the simulator accepts (a real DA1 is a few hundred KiB).
MAX_DA_BYTES = 16 << 20

# Command bytes (the device's view; the host's enum lives in mtkfs.protocols.brom).
READ16, READ32, WRITE16, WRITE32 = 0xD0, 0xD1, 0xD2, 0xD4
JUMP_DA, SEND_DA, GET_TARGET_CONFIG, JUMP_DA64 = 0xD5, 0xD7, 0xD8, 0xDE
GET_ME_ID, GET_SOC_ID = 0xE1, 0xE7
GET_HW_SW_VER, GET_HW_CODE, GET_BL_VER, GET_VERSION = 0xFC, 0xFD, 0xFE, 0xFF

# Statuses (names as in mtkfs.protocols.brom_status.STATUS_NAMES).
SLA_ERROR = 0x1D0D
DA_INVALID_JUMP_ADDR = 0x1D0F
DA_INVALID_ADDR_AND_LEN = 0x1D12
DA_LEN_IS_ZERO = 0x1D13
DA_SIG_LEN_EXCEED_DA_LEN = 0x1D14
DA_SIG_LEN_IS_ZERO_AND_DAA_ACTIVE = 0x1D15
DA_IMAGE_SIG_VERIFY_FAIL = 0x2001
ARG_ADDR_MISALIGNED, ARG_COUNT_IS_ZERO = 0xFFFF, 0xFFFE

TARGET_SLA, TARGET_DAA = 0x02, 0x04

#: The device a DA turns the line into: called with the uploaded DA bytes (signature included).
DaDevice = Callable[[bytes], Op[object]]


@dataclass
class SimFaults:
    """Ways to make the simulated device misbehave.

    Attributes:
        stale_bytes: sent before the device reads anything (left-over output of an earlier
            session or a noisy line); the host must skip them.
        handshake_start_index: the device is already this far into the start command (an
            aborted earlier handshake), so the host's first attempt is answered "start over".
        handshake_refusals: answer the first N handshake bytes as mismatches regardless.
        wrong_echo: commands whose echo comes back corrupted (the command still runs).
        garbage: commands answered, after their echo, with these bytes instead of their reply.
        silent_after: commands after which the device never answers again (it still reads).
        status: the first status to return for a command (e.g. ``{SEND_DA: 0x1D0D}``).
        da_status: the status after a SEND_DA upload (default: the DAA verdict, or 0).
        da_checksum: the checksum to report after a SEND_DA upload instead of the real one.
    """

    stale_bytes: bytes = b""
    handshake_start_index: int = 0
    handshake_refusals: int = 0
    wrong_echo: frozenset[int] = frozenset()
    garbage: dict[int, bytes] = field(default_factory=dict)
    silent_after: frozenset[int] = frozenset()
    status: dict[int, int] = field(default_factory=dict)
    da_status: int | None = None
    da_checksum: int | None = None


def device_checksum(data: bytes) -> int:
    """The device's SEND_DA checksum: XOR of the received data read as little-endian u16 words,
    an odd last byte XORed in alone (how the preloader walks its buffer)."""
    checksum = 0
    for i in range(0, len(data) - 1, 2):
        checksum ^= data[i] | data[i + 1] << 8
    if len(data) % 2:
        checksum ^= data[-1]
    return checksum


@dataclass
class SimBrom:
    """One simulated device in BROM or preloader mode; :meth:`run` is its generator.

    Configuration (constructor arguments) first, then what the device observed.
    """

    hw_code: int = 0x0766
    hw_sub_code: int = 0x8A00
    hw_ver: int = 0xCA00
    sw_ver: int = 0x0000
    target_config: int = 0
    mode: str = "brom"
    bl_ver: int = 3
    version: int = 0x05  # GET_VERSION in BROM mode: an arbitrary byte, no known real value
    me_id: bytes = bytes(range(0x10, 0x20))
    soc_id: bytes = bytes(range(0x40, 0x60))
    memory: dict[int, int] = field(default_factory=dict)
    #: Commands the device does not implement: echoed, then ignored (the real behaviour).
    unsupported: frozenset[int] | None = None
    #: With DAA on, whether a signed DA passes verification.
    daa_signature_ok: bool = False
    #: READY banners a listening preloader has printed before the host starts.
    ready_banners: int = 0
    da_device: DaDevice | None = None
    faults: SimFaults = field(default_factory=SimFaults)

    # Observations.
    handshake_bytes: bytearray = field(default_factory=bytearray, init=False)
    handshake_done: bool = field(default=False, init=False)
    commands: list[int] = field(default_factory=list, init=False)
    writes: list[tuple[int, int]] = field(default_factory=list, init=False)
    da_load_addr: int | None = field(default=None, init=False)
    da_sig_len: int | None = field(default=None, init=False)
    da_bytes: bytes = field(default=b"", init=False)
    da_verified: bool = field(default=False, init=False)
    jump_addr: int | None = field(default=None, init=False)
    jump_arch: int | None = field(default=None, init=False)
    hung: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.mode not in ("brom", "preloader"):
            raise ValueError(f"mode must be brom or preloader, not {self.mode!r}")
        if self.unsupported is None:
            self.unsupported = self._default_unsupported()

    def _default_unsupported(self) -> frozenset[int]:
        """A preloader has no GET_VERSION (it echoes 0xFF); before version 3 no IDs either."""
        if self.mode == "brom":
            return frozenset()
        old = {GET_ME_ID, GET_SOC_ID} if self.bl_ver <= 2 else set()
        return frozenset({GET_VERSION, *old})

    @property
    def da_bytes_received(self) -> int:
        """How many DA bytes reached the device (0 when the upload was refused)."""
        return len(self.da_bytes)

    @property
    def watchdog_writes(self) -> list[tuple[int, int]]:
        """The writes that hit this chip's watchdog register(s)."""
        chip = chip_for(self.hw_code)
        targets = {chip.watchdog_addr, chip.watchdog_extra_addr} - {None}
        return [(addr, value) for addr, value in self.writes if addr in targets]

    # ----------------------------------------------------------------------------------------

    def run(self) -> Op[None]:
        """The device: (preloader: listen) → handshake → command loop → DA, if one started."""
        if self.faults.stale_bytes:
            yield Send(self.faults.stale_bytes)
        if self.mode == "preloader":
            yield from self._listen()
        yield from self._handshake()
        self.handshake_done = True
        while True:
            (cmd,) = yield from recv_exact(1)
            self.commands.append(cmd)
            if cmd in self.faults.silent_after:
                yield from self._hang()
            started = yield from self._dispatch(cmd)
            if started:
                break
        if self.da_device is not None:
            yield from self.da_device(self.da_bytes)

    def _listen(self) -> Op[None]:
        """A preloader prints READY while it waits; the first A0 it reads enters its download
        handler and is consumed without a reply (other bytes are a tool token: ignored)."""
        for _ in range(self.ready_banners):
            yield Send(READY_BANNER)
        while True:
            (byte,) = yield from recv_exact(1)
            self.handshake_bytes.append(byte)
            if byte == START_COMMAND[0]:
                return

    def _handshake(self) -> Op[None]:
        """Each byte gets one reply: its complement if it was the expected next one, else the
        byte plus one, and the sequence starts over."""
        index = self.faults.handshake_start_index
        refusals = self.faults.handshake_refusals
        while index < len(START_COMMAND):
            (byte,) = yield from recv_exact(1)
            self.handshake_bytes.append(byte)
            if byte == START_COMMAND[index] and refusals <= 0:
                reply, index = ~byte & 0xFF, index + 1
            else:
                reply, index = (byte + 1) & 0xFF, 0
            refusals -= 1
            yield Send(bytes([reply]))

    def _hang(self) -> Op[NoReturn]:
        """Stop answering: read whatever comes, forever (a crashed or asserted device)."""
        self.hung = True
        while True:
            yield Recv(1)

    def _dispatch(self, cmd: int) -> Op[bool]:
        """Run one command; True when the DA was started and owns the line."""
        if cmd == GET_BL_VER:  # the one command that is not echoed
            reply = GET_BL_VER if self.mode == "brom" else self.bl_ver
            yield Send(self.faults.garbage.get(cmd, bytes([reply])))
            return False
        if cmd == GET_VERSION and self.mode == "brom":
            yield Send(self.faults.garbage.get(cmd, bytes([self.version])))
            return False
        yield Send(bytes([~cmd & 0xFF]) if cmd in self.faults.wrong_echo else bytes([cmd]))
        assert self.unsupported is not None
        if cmd in self.unsupported:
            return False
        if cmd in self.faults.garbage:
            yield Send(self.faults.garbage[cmd])
            return False
        handler = self._handlers().get(cmd)
        if handler is None:
            return False  # unknown: echoed, then nothing, as the preloader does
        return (yield from handler())

    def _handlers(self) -> dict[int, Callable[[], Op[bool]]]:
        return {
            GET_HW_CODE: self._get_hw_code,
            GET_HW_SW_VER: self._get_hw_sw_ver,
            GET_TARGET_CONFIG: self._get_target_config,
            GET_ME_ID: lambda: self._get_id(GET_ME_ID, self.me_id),
            GET_SOC_ID: lambda: self._get_id(GET_SOC_ID, self.soc_id),
            READ32: lambda: self._read(READ32, 4),
            READ16: lambda: self._read(READ16, 2),
            WRITE32: lambda: self._write(WRITE32, 4),
            WRITE16: lambda: self._write(WRITE16, 2),
            SEND_DA: self._send_da,
            JUMP_DA: lambda: self._jump(JUMP_DA),
            JUMP_DA64: lambda: self._jump(JUMP_DA64),
        }

    def _status(self, cmd: int, default: int = 0) -> int:
        return self.faults.status.get(cmd, default)

    # ----------------------------------------------------------------------------------------
    # Commands

    def _get_hw_code(self) -> Op[bool]:
        yield Send(_be16(self.hw_code) + _be16(self._status(GET_HW_CODE)))
        return False

    def _get_hw_sw_ver(self) -> Op[bool]:
        words = (self.hw_sub_code, self.hw_ver, self.sw_ver, self._status(GET_HW_SW_VER))
        yield Send(b"".join(_be16(word) for word in words))
        return False

    def _get_target_config(self) -> Op[bool]:
        yield Send(_be32(self.target_config) + _be16(self._status(GET_TARGET_CONFIG)))
        return False

    def _get_id(self, cmd: int, ident: bytes) -> Op[bool]:
        yield Send(_be32(len(ident)) + ident + _be16(self._status(cmd)))
        return False

    def _echo_u32(self) -> Op[int]:
        raw = yield from recv_exact(4)
        yield Send(raw)
        return int.from_bytes(raw, "big")

    def _arg_status(self, cmd: int, addr: int, count: int, width: int) -> int:
        """The preloader's argument checks (alignment, count), else an injected status."""
        if addr % width:
            return ARG_ADDR_MISALIGNED
        if count == 0:
            return ARG_COUNT_IS_ZERO
        return self._status(cmd)

    def _read(self, cmd: int, width: int) -> Op[bool]:
        addr = yield from self._echo_u32()
        count = yield from self._echo_u32()
        status = self._arg_status(cmd, addr, count, width)
        if status == 0:
            values = (self.memory.get(addr + i * width, 0) for i in range(count))
            yield Send(_be16(0) + b"".join(v.to_bytes(width, "big") for v in values))
        yield Send(_be16(status))  # on an argument error this is the only status
        return False

    def _write(self, cmd: int, width: int) -> Op[bool]:
        addr = yield from self._echo_u32()
        count = yield from self._echo_u32()
        status = self._arg_status(cmd, addr, count, width)
        if status == 0:
            yield Send(_be16(0))
            for i in range(count):
                raw = yield from recv_exact(width)
                yield Send(raw)
                value = int.from_bytes(raw, "big")
                self.memory[addr + i * width] = value
                self.writes.append((addr + i * width, value))
        yield Send(_be16(status))
        return False

    def _send_da_status(self, length: int, sig_len: int) -> int:
        """SEND_DA's first status: the security checks first, then the arguments."""
        if SEND_DA in self.faults.status:
            return self.faults.status[SEND_DA]
        if self.mode == "brom" and self.target_config & TARGET_SLA:
            return SLA_ERROR
        if self.target_config & TARGET_DAA and sig_len == 0:
            return DA_SIG_LEN_IS_ZERO_AND_DAA_ACTIVE
        if length == 0:
            return DA_LEN_IS_ZERO
        if sig_len > length:
            return DA_SIG_LEN_EXCEED_DA_LEN
        if length > MAX_DA_BYTES:
            return DA_INVALID_ADDR_AND_LEN
        return 0

    def _send_da(self) -> Op[bool]:
        addr = yield from self._echo_u32()
        length = yield from self._echo_u32()
        sig_len = yield from self._echo_u32()
        status = self._send_da_status(length, sig_len)
        yield Send(_be16(status))
        if status > 0xFF:
            return False  # back to the command loop: nothing is uploaded
        data = yield from recv_exact(length)
        self.da_load_addr, self.da_sig_len, self.da_bytes = addr, sig_len, data
        checksum = self.faults.da_checksum
        yield Send(_be16(device_checksum(data) if checksum is None else checksum))
        verdict = self._da_verdict()
        yield Send(_be16(verdict))
        if verdict != 0:
            yield from self._hang()  # the preloader wipes the DA and asserts
        self.da_verified = True
        return False

    def _da_verdict(self) -> int:
        if self.faults.da_status is not None:
            return self.faults.da_status
        if self.target_config & TARGET_DAA and not self.daa_signature_ok:
            return DA_IMAGE_SIG_VERIFY_FAIL
        return 0

    def _jump(self, cmd: int) -> Op[bool]:
        addr = yield from self._echo_u32()
        if cmd == JUMP_DA64:
            (arch,) = yield from recv_exact(1)
            yield Send(bytes([arch]))
            self.jump_arch = arch
        status = self._status(cmd)
        if not status and not self.da_verified:
            status = DA_IMAGE_SIG_VERIFY_FAIL  # download.c: no jump without a verified DA
        elif not status and addr != self.da_load_addr:
            status = DA_INVALID_JUMP_ADDR
        yield Send(_be16(status))
        if status:
            yield from self._hang()
        self.jump_addr = addr
        return True


def _be16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _be32(value: int) -> bytes:
    return value.to_bytes(4, "big")
