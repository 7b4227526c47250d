"""XML ("V6") DA protocol pairs: the host operations against the simulated DA, byte for byte.

Tiers: codec checks (documents, answers, numbers, the packet checksum, hostile XML), golden
bytes for the first command (spelled out from the reference, not from our encoder), the command
lifecycle against canned devices (errors, malformed and oversize frames: clear errors, never a
hang), host ↔ simulator pairs for every command mtkfs uses with the fault hooks, and the whole
chain from the BootROM handshake through a V6 DA file to reads and writes.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_ops import recording

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    OutOfRangeError,
    RemoteProtocolError,
    TransportError,
)
from mtkfs.links.base import drive
from mtkfs.protocols import brom
from mtkfs.protocols import da_xml as x
from mtkfs.protocols import xml_wire as W
from mtkfs.protocols.base import Op, Recv, Send, run_pair
from mtkfs.protocols.da_xflash import DT_MESSAGE, DT_PROTOCOL_FLOW, MAGIC
from mtkfs.protocols.dafile import parse_da_file
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_xflash import MemoryStore
from mtkfs.testing.sim_xml import DA_DRAM_BASE, XmlFaults, XmlSim, plain_checksum
from mtkfs.testing.simlink import GeneratorLink
from mtkfs.transports import da as da_transport

pytestmark = pytest.mark.timeout(60)

DA2 = b"DA2 stage two image " * 300
PACKET = 1024  # small packets: many per test, still fast
KiB, MiB = 1 << 10, 1 << 20


def pattern(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def emmc_store() -> MemoryStore:
    return MemoryStore(
        {
            "boot1": 64 * KiB,
            "boot2": 64 * KiB,
            "rpmb": 128 * KiB,
            "gp1": 32 * KiB,
            "user": 15 << 30,
        },
        content={
            "boot1": pattern("boot1", 64 * KiB),
            "boot2": pattern("boot2", 64 * KiB),
            "gp1": pattern("gp1", 32 * KiB),
            "user": pattern("user", 256 * KiB),
        },
    )


def ufs_store() -> MemoryStore:
    return MemoryStore(
        {"lu0": 4 * MiB, "lu1": 4 * MiB, "lu2": 120 << 30},
        kind="ufs",
        content={"lu0": pattern("lu0", 64 * KiB), "lu2": pattern("lu2", 256 * KiB)},
    )


def ready(sim: XmlSim, *, agent: str = "preloader") -> x.XmlSession:
    """Bring ``sim`` to stage 2 through the real client path."""
    return run_pair(x.connect(DA_DRAM_BASE, DA2, connection_agent=agent), sim.serve())


@pytest.fixture
def store() -> MemoryStore:
    return emmc_store()


@pytest.fixture
def sim(store: MemoryStore) -> XmlSim:
    return XmlSim(store, packet_bytes=PACKET)


@pytest.fixture
def session(sim: XmlSim) -> x.XmlSession:
    return ready(sim)


def canned(*replies: bytes) -> Op[object]:
    """A device that says its lines and then swallows whatever comes (never answers again)."""
    for reply in replies:
        yield Send(reply)
    while True:
        yield Recv(1)


def frame(payload: bytes, data_type: int = DT_PROTOCOL_FLOW) -> bytes:
    return struct.pack("<III", MAGIC, data_type, len(payload)) + payload


def text(value: str) -> bytes:
    return frame(value.encode() + b"\0")


def host_doc(command: str, body: str = "") -> bytes:
    return text(
        '<?xml version="1.0" encoding="utf-8"?><host><version>1.0</version>'
        f"<command>{command}</command>{body}</host>"
    )


START = host_doc("CMD:START")


def end(result: str = "OK", message: str = "") -> bytes:
    return host_doc("CMD:END", f"<arg><result>{result}</result><message>{message}</message></arg>")


def sent_texts(sends: list[Send]) -> list[str]:
    """The payloads of the host's frames, as text (headers left out)."""
    return [
        s.data.decode(errors="replace") for s in sends if s.data[:4] != MAGIC.to_bytes(4, "little")
    ]


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------


def test_command_documents() -> None:
    assert x.build_command("NOTIFY-INIT-HW") == (
        '<?xml version="1.0" encoding="utf-8"?><da><version>1.0</version>'
        "<command>CMD:NOTIFY-INIT-HW</command></da>"
    )
    doc = x.build_command("READ-FLASH", (("partition", "EMMC-USER"), ("offset", "0x200")))
    assert doc.endswith(
        "<command>CMD:READ-FLASH</command><arg><partition>EMMC-USER</partition>"
        "<offset>0x200</offset></arg></da>"
    )
    assert "<info>a&amp;b&lt;c</info>" in x.build_command("SET-HOST-INFO", (("info", "a&b<c"),))


def test_the_first_command_bytes_match_the_reference() -> None:
    """The answer to CMD:START and SET-RUNTIME-PARAMETER, spelled out from mtkclient's
    ``create_cmd`` (mtkclient.md §4.3), with the checksum level mtkfs picks."""
    sent: list[Send] = []
    run_pair(recording(x.set_runtime_parameters(), sent), canned(START, text("OK"), end()))
    document = (
        b'<?xml version="1.0" encoding="utf-8"?><da><version>1.1</version>'
        b"<command>CMD:SET-RUNTIME-PARAMETER</command><arg><checksum_level>USB</checksum_level>"
        b"<battery_exist>AUTO-DETECT</battery_exist><da_log_level>INFO</da_log_level>"
        b"<log_channel>UART</log_channel><system_os>LINUX</system_os></arg>"
        b"<adv><initialize_dram>YES</initialize_dram></adv></da>\0"
    )
    header = MAGIC.to_bytes(4, "little") + (1).to_bytes(4, "little")
    assert [s.data for s in sent] == [
        header + (3).to_bytes(4, "little"), b"OK\0",  # answer to CMD:START
        header + len(document).to_bytes(4, "little"), document,
        header + (3).to_bytes(4, "little"), b"OK\0",  # answer to CMD:END
    ]  # fmt: skip


def test_a_command_too_long_for_the_da_buffer_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="the DA takes 2048"):
        next(x.send_text("x" * 2048))


@pytest.mark.parametrize(
    ("reply", "ack"),
    [
        ("OK", W.Ack(True)),
        ("OK@0x0", W.Ack(True, "0x0")),
        ("OK@0x1f000", W.Ack(True, "0x1f000")),
        ("ERR", W.Ack(False, "ERR")),
        ("ERR!UNSUPPORTED", W.Ack(False, "ERR!UNSUPPORTED")),
    ],
)
def test_answers(reply: str, ack: W.Ack) -> None:
    assert x.parse_ack(reply, "t") == ack


@pytest.mark.parametrize("reply", ["", "ok", "KO", "<host><command>CMD:END</command></host>"])
def test_an_answer_that_is_none_is_out_of_step(reply: str) -> None:
    with pytest.raises(RemoteProtocolError, match="expected OK or ERR"):
        x.parse_ack(reply, "t")


@pytest.mark.parametrize(("value", "number"), [("0x1F", 31), ("0X10", 16), ("42", 42), ("0", 0)])
def test_numbers(value: str, number: int) -> None:
    assert x.parse_number(value, "t") == number


@pytest.mark.parametrize("value", ["", "0x", "-1", "0xZZ", "1e3", "12 34", "9" * 30, "١٢"])
def test_bad_numbers(value: str) -> None:
    with pytest.raises(RemoteProtocolError, match="not a number"):
        x.parse_number(value, "t")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4099))
def test_packet_checksum_matches_the_plain_definition(data: bytes) -> None:
    assert x.checksum_plain16(data) == plain_checksum(data) & 0xFFFF


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><host>&lol2;</host>'
)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (LAUGHS, "DTD or entity"),
        ('<!ENTITY x SYSTEM "file:///etc/passwd"><host/>', "DTD or entity"),
        ("<host><command>CMD:END</command>", "malformed XML"),
        ("OK", "malformed XML"),
    ],
)
def test_hostile_documents_are_refused(document: str, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        x.parse_document(document, "t")


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        run_pair(x.recv_text("t"), canned(frame(b"\xff\xfeOK\0")))


def test_an_oversize_frame_is_refused_before_it_is_read() -> None:
    op = x.recv_text("t")
    assert next(op) == Recv(12)
    with pytest.raises(RemoteProtocolError, match="announces 1073741824 bytes"):
        op.send(struct.pack("<III", MAGIC, DT_PROTOCOL_FLOW, 1 << 30))


def test_log_frames_are_skipped() -> None:
    log_line = frame(struct.pack("<I", 7) + b"[DA] dram init ok\0", DT_MESSAGE)
    assert run_pair(x.recv_text("t"), canned(log_line, log_line, text("OK@0x10"))) == "OK@0x10"


def hw_info(section: str, storage: str = "EMMC") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><da_hw_info><version>1.2</version>'
        f"<ram_size>0x100000000</ram_size><storage>{storage}</storage>{section}</da_hw_info>\0"
    ).encode()


def test_emmc_hardware_info() -> None:
    info = x.parse_hw_info(
        hw_info(
            "<emmc><block_size>0x200</block_size><boot1_size>0x400000</boot1_size>"
            "<boot2_size>0x400000</boot2_size><rpmb_size>0x1000000</rpmb_size>"
            "<user_size>0x3a3e00000</user_size><gp1_size>0</gp1_size><gp2_size>0x8000</gp2_size>"
            "<gp3_size>0</gp3_size><gp4_size>0</gp4_size><id>150100444836414241</id></emmc>"
        )
    )
    assert (info.kind, info.storage_id, info.block_size_bytes) == ("emmc", 1, 512)
    assert [(r.name, r.part_id, r.size_bytes) for r in info.regions] == [
        ("boot1", 1, 0x400000),
        ("boot2", 2, 0x400000),
        ("gp2", 5, 0x8000),
        ("user", 8, 0x3A3E00000),
    ]  # no rpmb: the DA has no section to read it through
    assert info.cid == bytes.fromhex("150100444836414241")


def test_ufs_hardware_info_as_mtkclient_quotes_it() -> None:
    info = x.parse_hw_info(
        hw_info(
            "<ufs><block_size>0x1000</block_size><lua0_size>0x400000</lua0_size>"
            "<lua1_size>0x400000</lua1_size><lua2_size>0xee5800000</lua2_size>"
            "<lua3_size>0</lua3_size><id>4D54303634474153414F32553231202000000000</id></ufs>",
            "UFS",
        )
    )
    assert (info.kind, info.storage_id, info.block_size_bytes) == ("ufs", 0x30, 4096)
    assert [(r.name, r.size_bytes) for r in info.regions] == [
        ("lu0", 0x400000),
        ("lu1", 0x400000),
        ("lu2", 0xEE5800000),
    ]


@pytest.mark.parametrize(
    ("document", "error", "words"),
    [
        (hw_info("", "NONE"), TransportError, "no storage"),
        (hw_info("<nand><block_size>0x20000</block_size></nand>", "NAND"), TransportError, "NAND"),
        (hw_info("", "EMMC"), RemoteProtocolError, "without its <emmc>"),
        (hw_info("<emmc><block_size>0x300</block_size></emmc>"), RemoteProtocolError, "block"),
        (hw_info("<emmc><user_size>lots</user_size></emmc>"), RemoteProtocolError, "number"),
        (hw_info("<emmc><user_size>0</user_size></emmc>"), TransportError, "without any area"),
        (b"<da_hw_info/>", RemoteProtocolError, "no <storage>"),
    ],
)
def test_unusable_hardware_info(document: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        x.parse_hw_info(document)


def test_partition_table() -> None:
    doc = (
        b'<?xml version="1.0" encoding="utf-8"?><partition_table version="1.0">'
        b"<pt><name>proinfo</name><start>0x8000</start><size>0x300000</size></pt>"
        b"<pt><name>misc</name><start>0x308000</start><size>0x80000</size></pt>"
        b"</partition_table>\0"
    )
    assert x.parse_partition_table(doc) == (
        x.XmlPartition("proinfo", 0x8000, 0x300000),
        x.XmlPartition("misc", 0x308000, 0x80000),
    )


@pytest.mark.parametrize(
    "entry",
    [
        "<pt><name>a\tb</name><start>0</start><size>0</size></pt>",
        f"<pt><name>{'n' * 65}</name><start>0</start><size>0</size></pt>",
        "<pt><name>boot</name><size>0</size></pt>",
        "<pt><name>boot</name><start>x</start><size>0</size></pt>",
        "<pt><name>p</name><start>0</start><size>0</size></pt>" * 1025,
    ],
)
def test_unusable_partition_tables(entry: str) -> None:
    with pytest.raises(RemoteProtocolError):
        x.parse_partition_table(f"<partition_table>{entry}</partition_table>".encode())


@pytest.mark.parametrize(
    ("message", "error", "words"),
    [
        ("Security deny for [boot].\n", AuthRequiredError, "security policy"),
        ("Read length[10] is larger than partition max size[8]", OutOfRangeError, "beyond"),
        ("Data size bigger than partition max size.\n", OutOfRangeError, "beyond"),
        ("DRAM Init FAIL.\n", TransportError, "preloader mode"),
        ("DA Hash mismatch. Check these: \n1. EMI setting cause DRAM", TransportError, "DA2"),
        ("2nd DA address is invalid. reset.\n", TransportError, "DA1 refused DA2"),
        ("USB checksum error, chksum in PC is 0x1", TransportError, "retrying may help"),
        ("something \x1b[31m odd", TransportError, "replug"),
    ],
)
def test_da_failures_say_what_to_do(message: str, error: type[Exception], words: str) -> None:
    exc = x.end_error("CMD:X", message)
    assert type(exc) is error and words in str(exc)
    assert "\x1b" not in str(exc) and str(exc).startswith("CMD:X: the Download Agent failed")
    assert exc.temporary == ("checksum" in message)


# ---------------------------------------------------------------------------------------------
# The command lifecycle against canned devices
# ---------------------------------------------------------------------------------------------


def test_an_unsupported_optional_command_is_none() -> None:
    device = canned(START, text("ERR!UNSUPPORTED"), end("ERR!UNSUPPORTED", "Unsupported command."))
    assert run_pair(x.run_command(x.Command("X"), optional=True), device) is None


def test_an_unsupported_command_is_an_error() -> None:
    device = canned(START, text("ERR!UNSUPPORTED"), end("ERR!UNSUPPORTED", "Unsupported command."))
    with pytest.raises(RemoteProtocolError, match=r"CMD:X: this Download Agent does not support"):
        run_pair(x.run_command(x.Command("X")), device)


def test_an_err_answer_to_the_command_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match=r"could not take the command \(ERR\)"):
        run_pair(x.run_command(x.Command("X")), canned(START, text("ERR")))


def test_a_document_where_cmd_start_is_due() -> None:
    with pytest.raises(RemoteProtocolError, match="CMD:END where CMD:START was due"):
        run_pair(x.run_command(x.Command("X")), canned(end()))


def test_a_failed_command_ends_at_its_cmd_end_without_waiting() -> None:
    """After ERR the DA leaves its loop: the host must not wait for a CMD:START."""
    device = canned(START, text("OK"), end("ERR", "Cannot find [EMMC-FOO] on current device"))
    with pytest.raises(TransportError, match="Cannot find"):
        run_pair(x.run_command(x.Command("X")), device)


def upload_file(packet: int = 0x400) -> bytes:
    return host_doc(
        "CMD:UPLOAD-FILE",
        "<arg><checksum>CHK_NO</checksum><info>EMMC-USER</info><target_file>ROM_0</target_file>"
        f"<packet_length>0x{packet:x}</packet_length></arg>",
    )


def test_an_upload_larger_than_asked_is_refused_before_any_packet() -> None:
    device = canned(START, text("OK"), upload_file(), text("OK@0x100000000"))
    with pytest.raises(RemoteProtocolError, match="announces 4294967296 bytes where at most 512"):
        run_pair(x.read_flash("EMMC-USER", 0, 512), device)


def test_a_packet_longer_than_what_is_left_is_refused() -> None:
    device = canned(
        START, text("OK"), upload_file(), text("OK@0x200"), text("OK@0x0"), frame(bytes(1024))
    )
    with pytest.raises(RemoteProtocolError, match="announces 1024 bytes where at most 512"):
        run_pair(x.read_flash("EMMC-USER", 0, 512), device)


def test_an_unexpected_progress_line() -> None:
    progress = host_doc("CMD:PROGRESS-REPORT", "<arg><message>init-hw</message></arg>")
    device = canned(START, text("OK"), progress, text("OK!PROGRESS@5@"), text("surprise"))
    with pytest.raises(RemoteProtocolError, match="expected progress or OK!EOT, got 'surprise'"):
        run_pair(x.notify_init_hw(), device)


def test_an_unexpected_da_request() -> None:
    with pytest.raises(RemoteProtocolError, match="unexpected DA request CMD:SELF-DESTRUCT"):
        run_pair(x.notify_init_hw(), canned(START, text("OK"), host_doc("CMD:SELF-DESTRUCT")))


def test_a_download_request_where_no_data_is_due() -> None:
    download = host_doc("CMD:DOWNLOAD-FILE", "<arg><packet_length>0x1000</packet_length></arg>")
    with pytest.raises(RemoteProtocolError, match="asks for a file"):
        run_pair(x.notify_init_hw(), canned(START, text("OK"), download))


def test_a_silent_device_is_reported_not_hung() -> None:
    with pytest.raises(LocalProtocolError, match="exchange stuck: host waits for 12 bytes"):
        run_pair(x.notify_init_hw(), canned(START, text("OK")))


# ---------------------------------------------------------------------------------------------
# Bring-up against the simulator
# ---------------------------------------------------------------------------------------------


def test_connect_in_preloader_mode(sim: XmlSim) -> None:
    session = ready(sim)
    assert session.protocol == "xml" and session.connection_agent == "preloader"
    assert sim.commands == [
        "SET-RUNTIME-PARAMETER",
        "HOST-SUPPORTED-COMMANDS",
        "NOTIFY-INIT-HW",
        "BOOT-TO",
        "HOST-SUPPORTED-COMMANDS",
        "NOTIFY-INIT-HW",
        "GET-SYS-PROPERTY",
        "GET-HW-INFO",
    ]
    assert sim.stage == 2 and sim.da2 == DA2 and sim.boot_address == DA_DRAM_BASE
    assert sim.runtime["checksum_level"] == "USB" and sim.runtime["initialize_dram"] == "YES"
    assert sim.host_capability == x.HOST_CAPABILITY
    assert sim.log_frames > 0  # interleaved all along, and skipped
    assert [r.name for r in session.storage.regions] == ["boot1", "boot2", "gp1", "user"]
    assert session.storage.cid == b"SIMEMMC-CID-0001"


def test_connect_in_brom_mode_lets_da1_set_dram_up(store: MemoryStore) -> None:
    sim = XmlSim(store, connection_agent="brom")
    assert not sim.dram_ready
    assert ready(sim, agent="brom").connection_agent == "brom"
    assert sim.dram_ready and sim.stage == 2


def test_dram_failure_in_brom_mode_says_use_preloader_mode(store: MemoryStore) -> None:
    sim = XmlSim(store, connection_agent="brom", faults=XmlFaults(dram_init_fails=True))
    with pytest.raises(TransportError, match=r"NOTIFY-INIT-HW.*DRAM Init FAIL.*preloader mode"):
        ready(sim, agent="brom")
    assert "BOOT-TO" not in sim.commands and sim.halted


def test_da1_refusing_da2(store: MemoryStore) -> None:
    faults = XmlFaults(command_errors={"BOOT-TO": "DA Hash mismatch. Check these: ..."})
    with pytest.raises(TransportError, match="DA1 refused DA2"):
        ready(XmlSim(store, faults=faults))


def test_da2_at_another_address_makes_da1_reset(sim: XmlSim) -> None:
    run_pair(x.set_runtime_parameters(), sim.serve())
    with pytest.raises(TransportError, match="2nd DA address is invalid"):
        run_pair(x.boot_to(0x200000, DA2), sim.serve())
    assert sim.da2 == b""


def test_sla_is_refused_before_any_storage_command(store: MemoryStore) -> None:
    sim = XmlSim(store, sla=True)
    with pytest.raises(AuthRequiredError, match=r"DA\.SLA is ENABLED"):
        ready(sim)
    assert sim.commands[-1] == "GET-SYS-PROPERTY"
    assert not {"GET-HW-INFO", "READ-FLASH", "WRITE-FLASH"} & set(sim.commands)


def test_optional_commands_a_da_may_lack(store: MemoryStore) -> None:
    """No HOST-SUPPORTED-COMMANDS, no GET-SYS-PROPERTY (so no DA-level SLA): the DA's loop goes
    on after ERR!UNSUPPORTED, and so does the bring-up."""
    faults = XmlFaults(unsupported={"HOST-SUPPORTED-COMMANDS", "GET-SYS-PROPERTY"})
    sim = XmlSim(store, faults=faults, packet_bytes=PACKET)
    session = ready(sim)
    assert run_pair(session.read("user", 0, 100), sim.serve()) == pattern("user", 100)


def test_storage_commands_before_da2_are_unsupported(sim: XmlSim) -> None:
    with pytest.raises(RemoteProtocolError, match="CMD:GET-HW-INFO: this Download Agent does not"):
        run_pair(x.get_hw_info(), sim.serve())
    assert run_pair(x.set_runtime_parameters(), sim.serve()) is None  # still in step


# ---------------------------------------------------------------------------------------------
# READ-FLASH
# ---------------------------------------------------------------------------------------------

LENGTHS = [1, 511, 512, 513, PACKET - 1, PACKET, PACKET + 1, 5 * PACKET + 17]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("offset", [0, 1, 511, 4096 + 3])
def test_read_lengths(
    sim: XmlSim, store: MemoryStore, session: x.XmlSession, offset: int, length: int
) -> None:
    assert run_pair(session.read("user", offset, length), sim.serve()) == store.read(
        "user", offset, length
    )


@settings(max_examples=40, deadline=None)
@given(
    offset=st.integers(0, 200 * KiB),
    length=st.integers(1, 40 * KiB),
    packet=st.sampled_from([512, 1024, 4096, 8192 + 512]),
    region=st.sampled_from(["boot1", "gp1", "user"]),
)
def test_reads_spanning_packets_are_byte_exact(
    offset: int, length: int, packet: int, region: str
) -> None:
    store = emmc_store()
    size = store.region_sizes()[region]
    offset = min(offset, size - 1)
    length = min(length, size - offset)
    sim = XmlSim(store, packet_bytes=packet)
    session = ready(sim)
    got = run_pair(session.read(region, offset, length), sim.serve())
    assert got == store.read(region, offset, length)


def test_read_exchange_names_the_section_in_whole_blocks(
    sim: XmlSim, session: x.XmlSession
) -> None:
    sent: list[Send] = []
    run_pair(recording(session.read("boot2", 700, 100), sent), sim.serve())
    command = next(t for t in sent_texts(sent) if "READ-FLASH" in t)
    assert (
        "<partition>EMMC-BOOT2</partition><offset>0x200</offset><length>0x200</length>" in command
    )


def test_ufs_lus_with_4096_byte_blocks() -> None:
    store = ufs_store()
    sim = XmlSim(store, packet_bytes=4096)
    session = ready(sim)
    storage = session.storage
    assert (storage.kind, storage.block_size_bytes) == ("ufs", 4096)
    assert [(r.name, r.size_bytes) for r in storage.regions] == [
        ("lu0", 4 * MiB),
        ("lu1", 4 * MiB),
        ("lu2", 120 << 30),
    ]
    assert session.write_unit_bytes == 4096
    sent: list[Send] = []
    got = run_pair(recording(session.read("lu2", 5000, 20000), sent), sim.serve())
    assert got == store.read("lu2", 5000, 20000)
    assert "<partition>UFS-LUA2</partition><offset>0x1000</offset><length>0x6000</length>" in (
        next(t for t in sent_texts(sent) if "READ-FLASH" in t)
    )
    assert run_pair(session.read("lu0", 4095, 2), sim.serve()) == store.read("lu0", 4095, 2)
    data = pattern("ufs write", 8192)
    run_pair(session.write("lu1", 4096, data), sim.serve())
    assert store.read("lu1", 4096, 8192) == data


def test_a_read_past_the_end_is_out_of_range_and_ends_the_session(
    sim: XmlSim, session: x.XmlSession
) -> None:
    with pytest.raises(OutOfRangeError, match="larger than partition max size"):
        run_pair(session.read("boot1", 60 * KiB, 8 * KiB), sim.serve())
    assert sim.halted  # the DA left its command loop: the transport reconnects
    with pytest.raises(LocalProtocolError, match="device finished"):
        run_pair(session.read("boot1", 0, 16), sim.serve())


def test_a_failed_read_packet(sim: XmlSim, session: x.XmlSession) -> None:
    sim.faults.fail_read_packet = 2
    with pytest.raises(TransportError, match=r"READ-FLASH.*MMC error"):
        run_pair(session.read("user", 0, 4 * PACKET), sim.serve())
    assert sim.halted


def test_a_corrupted_read_packet_reaches_the_host_unnoticed(
    sim: XmlSim, store: MemoryStore, session: x.XmlSession
) -> None:
    """XML reads carry no checksum: only the transport's read-back compare can catch this."""
    sim.faults.corrupt_read_packet = 3
    got = run_pair(session.read("user", 0, 4 * PACKET), sim.serve())
    want = store.read("user", 0, 4 * PACKET)
    assert [i for i in range(len(got)) if got[i] != want[i]] == [2 * PACKET]


@pytest.mark.parametrize("region", ["rpmb", "lu0", "flash"])
def test_regions_without_a_section(session: x.XmlSession, region: str) -> None:
    with pytest.raises(LocalProtocolError, match="no XML DA section"):
        next(session.read(region, 0, 512))


def test_empty_transfers_exchange_nothing(session: x.XmlSession) -> None:
    with pytest.raises(StopIteration) as read:
        next(session.read("user", 123, 0))
    assert read.value.value == b""
    with pytest.raises(StopIteration):
        next(session.write("user", 0, b""))


# ---------------------------------------------------------------------------------------------
# WRITE-FLASH
# ---------------------------------------------------------------------------------------------


def test_write_round_trip(sim: XmlSim, store: MemoryStore, session: x.XmlSession) -> None:
    data = pattern("new", 5 * 512)
    sent: list[Send] = []
    run_pair(recording(session.write("user", 8192, data), sent), sim.serve())
    assert sim.data_frame_sizes == [1024, 1024, 512]
    assert store.read("user", 8192, len(data)) == data
    assert run_pair(session.read("user", 8192, len(data)), sim.serve()) == data
    texts = sent_texts(sent)
    assert "<partition>EMMC-USER</partition><offset>0x2000</offset>" in texts[1]
    sums = [t.rstrip("\0") for t in texts if t.startswith("OK@0x") and t != "OK@0xa00\0"]
    expected = [data[i : i + 1024] for i in range(0, len(data), 1024)]
    assert sums == [f"OK@0x{plain_checksum(c) & 0xFFFF:x}" for c in expected]  # CHK_ADD


def test_a_partial_block_is_padded(sim: XmlSim, store: MemoryStore, session: x.XmlSession) -> None:
    run_pair(session.write("boot2", 512, b"abc"), sim.serve())
    assert store.read("boot2", 512, 512) == b"abc" + bytes(509)


def corrupting(op: Op[object]) -> Op[object]:
    """``op`` over a link that flips a bit in every Send larger than 512 bytes."""
    request = next(op)
    while True:
        if isinstance(request, Send) and len(request.data) > 512:
            request = Send(bytes([request.data[0] ^ 1]) + request.data[1:])
        reply = yield request
        try:
            request = op.send(reply)
        except StopIteration as stop:
            return stop.value


def test_a_garbled_write_packet_fails_its_checksum(sim: XmlSim, session: x.XmlSession) -> None:
    with pytest.raises(TransportError, match="USB checksum error") as caught:
        run_pair(corrupting(session.write("user", 0, pattern("w", 4096))), sim.serve())
    assert caught.value.temporary
    assert sim.data_frame_sizes == []  # nothing garbled reached the flash


def test_write_faults(sim: XmlSim, session: x.XmlSession) -> None:
    sim.faults.drop_write_packet = 1
    sim.faults.corrupt_write_packet = 2
    data = pattern("lost", 2048)
    run_pair(session.write("user", 0, data), sim.serve())  # "success"
    stored = run_pair(session.read("user", 0, 2048), sim.serve())
    assert stored[:1024] == bytes(1024)  # erased, never written
    assert stored[1024:2047] == data[1024:2047] and stored[2047] == data[2047] ^ 0x80


def test_a_write_past_the_end(sim: XmlSim, session: x.XmlSession) -> None:
    with pytest.raises(OutOfRangeError, match="Host file size"):
        run_pair(session.write("boot1", 63 * KiB, bytes(2048)), sim.serve())


def test_an_unaligned_write_is_our_bug(session: x.XmlSession) -> None:
    with pytest.raises(LocalProtocolError, match="not 512-aligned"):
        next(session.write("user", 100, b"x"))


def test_writes_the_da_forbids(sim: XmlSim, session: x.XmlSession) -> None:
    sim.faults.command_errors["WRITE-FLASH"] = "Security deny for [preloader].\n"
    with pytest.raises(AuthRequiredError, match="Security deny"):
        run_pair(session.write("boot1", 0, bytes(512)), sim.serve())


# ---------------------------------------------------------------------------------------------
# Partition table, unsupported commands, shutdown
# ---------------------------------------------------------------------------------------------


def test_read_partition_table(store: MemoryStore) -> None:
    table = (("pgpt", 0, 0x8000), ("boot", 0x100000, 0x2000000))
    sim = XmlSim(store, partition_table=table)
    session = ready(sim)
    assert run_pair(session.read_partition_table(), sim.serve()) == tuple(
        x.XmlPartition(*entry) for entry in table
    )


def test_an_unsupported_command_keeps_the_session(sim: XmlSim, session: x.XmlSession) -> None:
    sim.faults.unsupported.add("READ-FLASH")
    with pytest.raises(RemoteProtocolError, match="READ-FLASH: this Download Agent does not"):
        run_pair(session.read("user", 0, 512), sim.serve())
    sim.faults.unsupported.clear()
    assert run_pair(session.read("user", 0, 512), sim.serve()) == pattern("user", 512)


def test_shutdown_reboots(sim: XmlSim, session: x.XmlSession) -> None:
    run_pair(session.shutdown(), sim.serve())
    assert sim.shut_down and sim.reboot_action == "IMMEDIATE"
    assert list(sim.serve()) == []  # gone


# ---------------------------------------------------------------------------------------------
# The whole chain: BROM handshake, V6 DA file, DA1, DA2, storage
# ---------------------------------------------------------------------------------------------

V6_DA = parse_da_file(build_for_codes([0x6833], v6=True), "MTK_DA_V6.bin")
USER = pattern("chain user", 2 * MiB)


def chain_phone(mode: str = "preloader") -> tuple[GeneratorLink, SimBrom, XmlSim, MemoryStore]:
    store = MemoryStore.from_bytes({"user": USER, "boot1": pattern("chain boot1", MiB)})
    sim = XmlSim(store, connection_agent=mode, packet_bytes=64 * KiB)
    rom = SimBrom(hw_code=0x0989, mode=mode, da_device=lambda da1: sim.serve())
    return GeneratorLink(rom.run()), rom, sim, store


@pytest.mark.parametrize("mode", ["preloader", "brom"])
async def test_the_whole_chain(mode: str) -> None:
    """What the transport's ``bring_up`` does, step by step, then storage I/O on the link."""
    link, rom, sim, store = chain_phone(mode)
    info = await drive(brom.identify(preloader_prefix=True), link)
    assert info.chip.name == "MT6833" and V6_DA.protocol_for(info.chip) == "xml"
    entry = V6_DA.select(info.hw_code, info.hw_sub_code, info.hw_ver, info.sw_ver)
    brom.check_security(info, da_signed=entry.da1.sig_len_bytes > 0)
    await drive(brom.send_da(entry.da1.load_addr, entry.da1.payload, entry.da1.sig_len_bytes), link)
    await drive(brom.jump_da(entry.da1.load_addr), link)
    session = await drive(x.connect_entry(entry, info, None), link)
    assert session.connection_agent == mode and sim.da2 == entry.da2_unsigned
    assert await drive(session.read("user", 12345, MiB), link) == USER[12345 : 12345 + MiB]
    await drive(session.write("user", MiB, b"\x5a" * 4096), link)
    assert store.read("user", MiB, 4096) == b"\x5a" * 4096
    await drive(session.shutdown(), link)
    assert sim.shut_down and rom.jump_addr == entry.da1.load_addr


async def test_through_the_da_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once ``xml`` is in the transport's CONNECTORS, a V6 phone mounts like any other."""
    monkeypatch.setitem(da_transport.CONNECTORS, "xml", x.connect_entry)
    link, _rom, sim, store = chain_phone()
    transport = await da_transport.DaTransport.connect(link, V6_DA, writable=True)
    assert set(transport.regions) == {"user", "boot1"} and transport.write_unit_bytes == 512
    assert "xml DA" in transport.description
    assert await transport.read("user", 777, 300 * KiB) == USER[777 : 777 + 300 * KiB]
    new = pattern("via transport", 128 * KiB)
    await transport.write("user", 64 * KiB, new)
    assert store.read("user", 64 * KiB, len(new)) == new
    assert await transport.read_back("user", 64 * KiB, len(new)) == new
    await transport.aclose()
    assert sim.shut_down
