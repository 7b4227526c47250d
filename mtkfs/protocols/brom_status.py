"""BROM/preloader status codes: their names, and the exception (with advice) for a failing one.

Split from :mod:`mtkfs.protocols.brom`, which re-exports the public names: the tables are long,
change only when a new status is met, and say nothing about the command exchanges themselves.
A status is a big-endian u16; ``status <= 0xFF`` means success (mtkclient's rule).
"""

from __future__ import annotations

from mtkfs.errors import AuthRequiredError, RemoteProtocolError, TransportError

#: BROM/preloader status names (mtkclient ``Library/error.py``; 0xFFFD-0xFFFF are the preloader's
#: -3/-2/-1 argument checks in MediaTek's ``download.c``).
STATUS_NAMES: dict[int, str] = {
    0x1D00: "ADDRESS_TOO_HIGH_80000000",
    0x1D01: "ADDRESS_TOO_HIGH_40000000",
    0x1D02: "INVALID_ADDRESS",
    0x1D0C: "NO_AUTH_NEEDED",
    0x1D0D: "SLA_ERROR",
    0x1D0E: "DA_OVERLAP",
    0x1D0F: "DA_INVALID_JUMP_ADDR",
    0x1D10: "DA_EXCEED_MAX_DA_BLOCKS",
    0x1D11: "DA_ADDR_NOT_16BITS_ALIGNED",
    0x1D12: "DA_INVALID_ADDR_AND_LEN",
    0x1D13: "DA_LEN_IS_ZERO",
    0x1D14: "DA_SIG_LEN_EXCEED_DA_LEN",
    0x1D15: "DA_SIG_LEN_IS_ZERO_AND_DAA_ACTIVE",
    0x1D16: "DA_NOT_EXIST",
    0x1D17: "DA_BLOCKS_INCONSISTENT_WITH_TOOL_AUTH",
    0x1D21: "DA_VERSION_NOT_SUPPORTED",
    0x2000: "AUTH_IMAGE_VERIFY_FAIL",
    0x2001: "DA_IMAGE_SIG_VERIFY_FAIL",
    0x2002: "DA_IMAGE_NO_MEM_FAIL",
    0x2003: "DA_INIT_KEY_FAIL",
    0x2004: "IMG_INIT_KEY_FAIL",
    0x2005: "HASH_IMAGE_FAIL",
    0x2006: "DA_RELOCATE_SIZE_NOT_ENOUGH",
    0x5A5B: "DA_IN_BLACKLIST",
    0x6000: "SBC_KEY_NOT_FOUND",
    0x6001: "BR_SEC_CFG_NOT_FOUND",
    0x6002: "ERR_PUBK_NOT_INITIALIZED",
    0x6003: "SHA256_OP_FAIL",
    0x6004: "ERR_PSS_CHK_FAIL",
    0x6005: "ERR_SIG_CHK_FAIL",
    0x7000: "REGION_INVALID_INCLUDE",
    0x7001: "REGION_INVALID_OVERLAP",
    0x7002: "REGION_INVALID_OVERFLOW",
    0x7003: "DA_INVALID_LOCATION",
    0x7004: "DA_INVALID_LENGTH",
    0x7015: "DAA_SECURITY_ERROR_SIGNATURE",
    0x7017: "DAA_SECURITY_ERROR",
    0x7024: "DAA_SIG_VERIFY_FAILED",
    0xFFFD: "ARG_COUNT_OVERFLOW",
    0xFFFE: "ARG_COUNT_IS_ZERO",
    0xFFFF: "ARG_ADDR_MISALIGNED",
}

SIGNED_DA_ADVICE = (
    "use a Download Agent signed for this device (the vendor's MTK_AllInOne_DA.bin or DA_BR.bin "
    "from its firmware package, passed with --da), ideally with the phone in preloader mode "
    "(plugged in switched off, no buttons held)"
)

#: Statuses that mean "not without authorisation", with what the user can do about each.
AUTH_STATUSES: dict[int, str] = {
    0x1D0D: (
        "the BootROM requires serial-link authentication (SLA: a challenge signed with the "
        "vendor's private key) before it accepts a Download Agent, and mtkfs does not bypass "
        "it: connect in preloader mode (plugged in switched off, no buttons held) with the "
        "vendor's signed DA (--da), or use the vendor's authorised tool and auth file"
    ),
    0x1D15: "DA authentication (DAA) is on and the DA carries no signature; " + SIGNED_DA_ADVICE,
    0x1D17: "the DA does not match the device's authorisation (DAA); " + SIGNED_DA_ADVICE,
    0x2000: "the device rejected the image's signature (secure boot); " + SIGNED_DA_ADVICE,
    0x2001: (
        "the device verified the uploaded DA's signature and rejected it (secure boot / DAA); "
        + SIGNED_DA_ADVICE
    ),
    0x5A5B: "the device has blacklisted this DA; " + SIGNED_DA_ADVICE + " (a newer one)",
    0x7015: "DA authentication (DAA) failed on the signature; " + SIGNED_DA_ADVICE,
    0x7017: "DA authentication (DAA) refused the request; " + SIGNED_DA_ADVICE,
    0x7024: "DA authentication (DAA): the signature did not verify; " + SIGNED_DA_ADVICE,
}

RETRY_ADVICE = (
    "power the phone off (hold the power key ~10 s), reconnect it in BROM or preloader mode "
    "and retry"
)
_WRONG_DA = "the DA file's entry does not fit this chip (load address or size); check --da"

#: Advice for the non-authorisation statuses a user can actually act on.
_ADVICE: dict[int, str] = {
    0x1D0E: _WRONG_DA,
    0x1D0F: _WRONG_DA,
    0x1D10: _WRONG_DA,
    0x1D11: _WRONG_DA,
    0x1D12: _WRONG_DA,
    0x1D13: "the DA entry is empty; check --da",
    0x1D14: "the DA entry's signature length exceeds its size; the DA file is damaged",
    0x1D16: "no DA was uploaded before the jump; " + RETRY_ADVICE,
    0x1D21: "the device does not support this DA version; use the DA from its firmware package",
}


def status_name(status: int) -> str:
    """``DA_OVERLAP (0x1d0e)``, or ``unknown status 0x1234``."""
    name = STATUS_NAMES.get(status)
    return f"{name} ({status:#06x})" if name else f"unknown status {status:#06x}"


def status_error(status: int, what: str) -> TransportError:
    """The exception for a failing ``status`` of ``what`` (a command), with what to do.

    Authorisation statuses become :class:`AuthRequiredError` (exit code 8: retrying cannot help);
    everything else is the device refusing or misbehaving (:class:`RemoteProtocolError`).
    """
    auth = AUTH_STATUSES.get(status)
    if auth is not None:
        return AuthRequiredError(f"{what}: {status_name(status)}: {auth}")
    advice = _ADVICE.get(status, RETRY_ADVICE)
    return RemoteProtocolError(f"{what} failed: {status_name(status)}: {advice}")


def check_status(status: int, what: str) -> None:
    """Raise unless ``status`` means success (``<= 0xFF``, mtkclient's rule)."""
    if status > 0xFF:
        raise status_error(status, what)
