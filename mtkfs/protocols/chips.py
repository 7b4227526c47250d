"""MediaTek chips as the BootROM names them: the facts a client needs per hw_code.

Why a table: the BootROM only says a 16-bit ``hw_code`` (GET_HW_CODE). Which Download Agent entry
fits (``da_code``: the DA file indexes entries by *that* code, e.g. BROM 0x0766 → DA 0x6765), where
the watchdog is (to stop the phone rebooting mid-handshake), where DA1 is loaded, and which DA
protocol the chip speaks, are per-chip facts. Every row below is taken from mtkclient's
``mtkclient/config/brom_config.py`` (``hwconfig``: name, description, dacode, watchdog,
da_payload_addr, damode, has64bit, socid_addr) and the watchdog values from
``mtkclient/config/mtk_config.py`` (``get_watchdog_addr``); where brom_config leaves a field
empty, mtkclient's ``default_values`` applies and so does ours. IoT/feature-phone chips (MT62xx,
MT25xx, MT76xx) are left out: they speak a different BROM dialect (READ16_A2, no GET_HW_CODE
reply). Unknown chips fall back to mtkclient's defaults (see :func:`chip_for`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: What mtkclient writes to most watchdog control registers: mode key 0x22, reset/irq bits off.
WATCHDOG_OFF = 0x22000064


@dataclass(frozen=True)
class Chip:
    """One chip.

    Attributes:
        hw_code: what GET_HW_CODE returns.
        name: mtkclient's name, slash-separated variants sharing the BROM (``MT6765/MT8768t``).
        da_code: the hw_code of its entries in a DA file.
        watchdog_addr: the watchdog control register; None where no write is known.
        watchdog_value: what stops the watchdog when written there.
        watchdog_16bit: the watchdog register takes a 16-bit write (MT6575/77).
        watchdog_extra_addr: a second watchdog register written 0x22000000 (MT6592 only).
        da_payload_addr: where DA1 is loaded when the DA file does not say.
        protocol: the DA protocol family the chip's DAs speak: ``legacy``, ``xflash`` or ``xml``.
        brom64: a 64-bit BootROM (mtkclient ``has64bit``): its watchdog is left alone.
        reads_soc_id: the BROM answers GET_SOC_ID (mtkclient reads it when the chip has a
            ``socid_addr``, a 64-bit BROM or XML DAs); older BROMs ignore the command.
        description: the marketing names (``Helio P35/G35``), for messages.
    """

    hw_code: int
    name: str
    da_code: int
    watchdog_addr: int | None = 0x10007000
    watchdog_value: int = WATCHDOG_OFF
    watchdog_16bit: bool = False
    watchdog_extra_addr: int | None = None
    da_payload_addr: int = 0x201000
    protocol: str = "xflash"
    brom64: bool = False
    reads_soc_id: bool = False
    description: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """The full chip names in :attr:`name` (``MT6583/6589`` → MT6583, MT6589); suffix-only
        variants (``MT6735/T``) are skipped."""
        found: list[str] = []
        for part in self.name.replace(",", "/").split("/"):
            word = part.split()[0].upper() if part.split() else ""
            if word[:1].isdigit():
                word = "MT" + word
            if word.startswith(("MT", "AC")):
                found.append(word)
        return tuple(found)

    def describe(self) -> str:
        """One line for messages: ``MT6765/MT8768t (Helio P35/G35), hw_code 0x0766``."""
        extra = f" ({self.description})" if self.description else ""
        return f"{self.name}{extra}, hw_code {self.hw_code:#06x}"


#: Known chips by BROM hw_code: facts from mtkclient's brom_config (see the module docstring).
CHIPS: dict[int, Chip] = {
    chip.hw_code: chip
    for chip in (
        Chip(0x0279, "MT6797/MT6767", 0x6797, description="Helio X23/X25/X27"),
        Chip(
            0x0321,
            "MT6735/T,MT8735A",
            0x6735,
            watchdog_addr=0x10212000,
            watchdog_value=0x22000000,
            protocol="legacy",
        ),
        Chip(0x0326, "MT6755/MT6750/M/T/S", 0x6755, description="Helio P10/P15/P18"),
        Chip(
            0x0335,
            "MT6737M/MT6735G",
            0x6735,
            watchdog_addr=0x10212000,
            watchdog_value=0x22000000,
            protocol="legacy",
        ),
        Chip(
            0x0337,
            "MT6753",
            0x6735,
            watchdog_addr=0x10212000,
            watchdog_value=0x22000000,
            protocol="legacy",
        ),
        Chip(
            0x0507,
            "MT6759",
            0x6758,
            watchdog_addr=0x10210000,
            protocol="legacy",
            description="Helio P30",
        ),
        Chip(0x0551, "MT6757/MT6757D", 0x6757, description="Helio P20"),
        Chip(
            0x0562,
            "MT6799",
            0x6799,
            watchdog_addr=0x10211000,
            reads_soc_id=True,
            description="Helio X30/X35",
        ),
        Chip(0x0571, "MT0571", 0x0571, da_payload_addr=0x200000, protocol="legacy"),
        Chip(0x0598, "ELBRUS/MT0598", 0x0598, watchdog_addr=0x10211000, protocol="legacy"),
        Chip(0x0601, "MT6750", 0x6755),
        Chip(0x0633, "MT6570/MT8321", 0x6570),
        Chip(
            0x0688,
            "MT6758",
            0x6758,
            watchdog_addr=0x10211000,
            reads_soc_id=True,
            description="Helio P30",
        ),
        Chip(0x0690, "MT6763", 0x6763, reads_soc_id=True, description="Helio P23"),
        Chip(0x0699, "MT6739/MT6731/MT8765", 0x6739, reads_soc_id=True),
        Chip(0x0707, "MT6768/MT6769", 0x6768, reads_soc_id=True, description="Helio P65/G85 k68v1"),
        Chip(
            0x0717,
            "MT6761/MT6762/MT3369/MT8766B/MT8761/AC8259/AC8257",
            0x6761,
            reads_soc_id=True,
            description="Helio A20/P22/A22/A25/G25",
        ),
        Chip(0x0725, "MT6779", 0x6779, reads_soc_id=True, description="Helio P90 k79v1"),
        Chip(0x0766, "MT6765/MT8768t", 0x6765, reads_soc_id=True, description="Helio P35/G35"),
        Chip(
            0x0788,
            "MT6771/MT8385/MT8183/MT8666",
            0x6771,
            reads_soc_id=True,
            description="Helio P60/P70/G80",
        ),
        Chip(0x0813, "MT6785", 0x6785, reads_soc_id=True, description="Helio G90"),
        Chip(
            0x0816,
            "MT6885/MT6883/MT6889/MT6880/MT6890",
            0x6885,
            reads_soc_id=True,
            description="Dimensity 1000L/1000",
        ),
        Chip(0x0886, "MT6873", 0x6873, reads_soc_id=True, description="Dimensity 800/820 5G"),
        Chip(
            0x0907,
            "MT6983",
            0x0907,
            watchdog_addr=0x1C007000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 9000/9000+",
        ),
        Chip(0x0908, "MT8696", 0x8696),
        Chip(0x0930, "MT8195 Chromebook", 0x8195),
        Chip(0x0950, "MT6891/MT6893", 0x6893, reads_soc_id=True, description="Dimensity 1200"),
        Chip(
            0x0959,
            "MT6877/MT6877V/MT8791N",
            0x6877,
            reads_soc_id=True,
            description="Dimensity 900/1080/7050",
        ),
        Chip(0x0989, "MT6833", 0x6833, reads_soc_id=True, description="Dimensity 700 5G k6833"),
        Chip(0x0992, "MT6880/MT6890 Modem", 0x0992),
        Chip(0x0996, "MT6853", 0x6853, reads_soc_id=True, description="Dimensity 720 5G"),
        Chip(0x1066, "MT6781", 0x6781, reads_soc_id=True, description="Helio G96"),
        Chip(
            0x1129,
            "MT6855",
            0x1129,
            watchdog_addr=0x1C007000,
            protocol="xml",
            reads_soc_id=True,
            description="Dimensity 8100",
        ),
        Chip(
            0x1172,
            "MT6895",
            0x1172,
            watchdog_addr=0x1C007000,
            protocol="xml",
            reads_soc_id=True,
            description="Dimensity 8200",
        ),
        Chip(
            0x1203,
            "MT6897",
            0x1203,
            watchdog_addr=0x1C007000,
            protocol="xml",
            reads_soc_id=True,
            description="Dimensity 8300 Ultra",
        ),
        Chip(
            0x1208,
            "MT6789/MT8781V",
            0x1208,
            protocol="xml",
            reads_soc_id=True,
            description="MTK Helio G99",
        ),
        Chip(
            0x1209,
            "MT6835V/ZA",
            0x1209,
            watchdog_addr=0x1C007000,
            da_payload_addr=0x2001000,
            protocol="xml",
            reads_soc_id=True,
            description="MTK Dimensity 6100+",
        ),
        Chip(
            0x1229,
            "MT6886",
            0x1229,
            watchdog_addr=0x1C007000,
            da_payload_addr=0x2001000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 7200 Ultra",
        ),
        Chip(
            0x1236,
            "MT6989W",
            0x1236,
            watchdog_addr=0x1C00B000,
            da_payload_addr=0x2001000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 9300 Plus",
        ),
        Chip(
            0x1296,
            "MT6985",
            0x1296,
            watchdog_addr=0x1C007000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 9200/9200+",
        ),
        Chip(
            0x1357,
            "MT6991",
            0x1357,
            watchdog_addr=0x1C010000,
            protocol="xml",
            reads_soc_id=True,
            description="Dimensity 9400 Ultra",
        ),
        Chip(
            0x1375,
            "MT6878",
            0x1375,
            watchdog_addr=0x1C00A000,
            da_payload_addr=0x2010000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 7300",
        ),
        Chip(
            0x1471,
            "MT6993",
            0x1471,
            watchdog_addr=0x1C010000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 9500",
        ),
        Chip(0x3967, "MT3967", 0x3967, protocol="legacy"),
        Chip(0x6516, "MT6516", 0x6516, watchdog_addr=0x10003000, protocol="legacy"),
        Chip(
            0x6571,
            "MT6571",
            0x6571,
            watchdog_addr=0x10007400,
            watchdog_value=0x22000000,
            da_payload_addr=0x2009000,
            protocol="legacy",
        ),
        Chip(0x6572, "MT6572", 0x6572, da_payload_addr=0x2008000, protocol="legacy"),
        Chip(
            0x6573,
            "MT6573/MT6260",
            0x6573,
            watchdog_addr=0x70025000,
            da_payload_addr=0x90006000,
            protocol="legacy",
        ),
        Chip(
            0x6575,
            "MT6575/MT8317",
            0x6575,
            watchdog_addr=0xC0000000,
            watchdog_value=0x2264,
            watchdog_16bit=True,
            da_payload_addr=0xC2001000,
            protocol="legacy",
        ),
        Chip(
            0x6577,
            "MT6577",
            0x6577,
            watchdog_addr=0xC0000000,
            watchdog_value=0x2264,
            watchdog_16bit=True,
            da_payload_addr=0xC2001000,
            protocol="legacy",
        ),
        Chip(0x6580, "MT6580", 0x6580, protocol="legacy"),
        Chip(0x6582, "MT6582/MT6574/MT8382", 0x6582, protocol="legacy"),
        Chip(
            0x6583,
            "MT6583/6589",
            0x6583,
            watchdog_addr=0x10000000,
            da_payload_addr=0x12001000,
            protocol="legacy",
        ),
        Chip(
            0x6592,
            "MT6592/MT8392",
            0x6592,
            watchdog_extra_addr=0x10000500,
            da_payload_addr=0x111000,
            protocol="legacy",
        ),
        Chip(0x6595, "MT6595", 0x6595, da_payload_addr=0x111000, protocol="legacy"),
        Chip(0x6752, "MT6752", 0x6752, protocol="legacy"),
        Chip(
            0x6795,
            "MT6795",
            0x6795,
            da_payload_addr=0x110000,
            protocol="legacy",
            description="Helio X10",
        ),
        Chip(
            0x6899,
            "MT6899",
            0x1357,
            watchdog_addr=0x1C010000,
            protocol="xml",
            brom64=True,
            reads_soc_id=True,
            description="Dimensity 8400 Turbo/Ultra",
        ),
        Chip(0x8127, "MT8127/MT3367/AC8227L", 0x8127, protocol="legacy"),
        Chip(
            0x8135,
            "MT8135",
            0x8135,
            watchdog_addr=0x10000000,
            da_payload_addr=0x12001000,
            protocol="legacy",
        ),
        Chip(0x8163, "MT8163", 0x8163, protocol="legacy"),
        Chip(0x8167, "MT8167/MT8516/MT8362", 0x8167, reads_soc_id=True),
        Chip(0x8168, "MT8168/MT6357", 0x8168, reads_soc_id=True),
        Chip(0x8172, "MT8173", 0x8173, da_payload_addr=0xC0000, protocol="legacy"),
        Chip(0x8176, "MT8176", 0x8173, da_payload_addr=0xC0000, protocol="legacy"),
        Chip(0x8512, "MT8512", 0x8512, da_payload_addr=0x111000, reads_soc_id=True),
        Chip(0x8518, "MT8518 VoiceAssistant", 0x8518, da_payload_addr=0x200000),
        Chip(0x8590, "MT8590/MT7683/MT8521/MT7623", 0x8590, protocol="legacy"),
        Chip(0x8695, "MT8695", 0x8695),
    )
}

#: What mtkclient assumes for a hw_code it does not know (``default_values``).
_UNKNOWN_DA_PAYLOAD_ADDR = 0x200000


def chip_for(hw_code: int) -> Chip:
    """The chip with ``hw_code``; an unknown one gets mtkclient's defaults (DA code = hw_code,
    watchdog 0x10007000, DA1 at 0x200000, legacy DA protocol)."""
    known = CHIPS.get(hw_code)
    if known is not None:
        return known
    return Chip(
        hw_code,
        f"unknown chip {hw_code:#06x}",
        hw_code,
        da_payload_addr=_UNKNOWN_DA_PAYLOAD_ADDR,
        protocol="legacy",
    )


def chip_named(name: str) -> Chip | None:
    """The known chip one of whose names is ``name`` (case-insensitive: ``mt6765``), or None."""
    wanted = name.strip().upper()
    for chip in CHIPS.values():
        if wanted in chip.names:
            return chip
    return None
