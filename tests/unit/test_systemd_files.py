"""The shipped udev rules, unit and configuration: checked as a reviewer would — exact VID:PID
pairs, ``+=`` for SYSTEMD_WANTS, no world-writable MODE, ModemManager kept away — and
installed/uninstalled under a scratch prefix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtkfs import systemd_files
from mtkfs.links.usb_ids import USB_IDENTITIES

REPO = Path(__file__).parent.parent.parent
RULES = (REPO / "systemd" / "60-mtkfs.rules").read_text()


def _rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pairs(text: str, attr: str) -> set[tuple[int, int]]:
    found = set()
    for rule in _rules(text):
        vid = re.search(attr + r'\{idVendor\}=="([0-9a-f]{4})"', rule)
        pid = re.search(attr + r'\{idProduct\}=="([0-9a-f]{4})"', rule)
        assert bool(vid) == bool(pid), f"a vendor without its product (or back): {rule}"
        if vid and pid:
            found.add((int(vid.group(1), 16), int(pid.group(1), 16)))
    return found


def test_shipped_rules_are_the_generated_ones() -> None:
    assert systemd_files.render_rules() == RULES, (
        "run: python -m mtkfs.systemd_files > systemd/60-mtkfs.rules"
    )


def test_rules_match_exact_vid_pid_pairs_only() -> None:
    table = {(i.vid, i.pid) for i in USB_IDENTITIES}
    assert _pairs(RULES, "ATTR") == table
    assert _pairs(RULES, "ATTRS") == table
    # Never a whole vendor: every rule naming a vendor names a product too (checked above),
    # and no wildcard or alternative sneaks into a value.
    for rule in _rules(RULES):
        for value in re.findall(r'(?:ATTRS?)\{id(?:Vendor|Product)\}=="([^"]*)"', rule):
            assert re.fullmatch(r"[0-9a-f]{4}", value), rule
    # Serial bridges (FTDI, CP210x, CH340, PL2303) are not phones.
    for vendor in ("0403", "10c4", "1a86", "067b"):
        assert vendor not in RULES


def test_rules_grant_group_access_start_the_unit_and_keep_modemmanager_away() -> None:
    rules = _rules(RULES)
    for rule in rules:
        for mode in re.findall(r'MODE="(\d+)"', rule):
            assert int(mode, 8) & 0o007 == 0, f"world access: {rule}"
        assert "SYSTEMD_WANTS}=" not in rule, f"'=' would drop other wants: {rule}"
    wants = [r for r in rules if "SYSTEMD_WANTS" in r]
    assert wants == ['TAG+="systemd", ENV{SYSTEMD_WANTS}+="mtkfs@usb-%k.service"']
    assert any('ENV{ID_MM_DEVICE_IGNORE}="1"' in r and 'GROUP="plugdev"' in r for r in rules)
    assert sum('ENV{ID_MM_DEVICE_IGNORE}="1"' in r for r in rules) == len(USB_IDENTITIES) + 1
    assert rules[0] == 'ACTION=="remove", GOTO="mtkfs_end"'
    labels = set(re.findall(r'LABEL="(\w+)"', RULES))
    assert set(re.findall(r'GOTO="(\w+)"', RULES)) <= labels


def test_uboot_example_is_keyed_on_an_adapter_serial() -> None:
    example = _rules(systemd_files.shipped(systemd_files.UBOOT_EXAMPLE_NAME))
    assert len(example) == 1
    assert "ATTRS{serial}==" in example[0] and "idVendor" not in example[0]
    assert 'ENV{SYSTEMD_WANTS}+="mtkfs@uboot-' in example[0]
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in example[0] and "0666" not in example[0]


def test_unit_is_notify_with_no_mount_namespace() -> None:
    unit = systemd_files.render_unit(Path("/usr/bin/mtkfs"))
    keys = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in unit.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert keys["Type"] == "notify"
    assert keys["ExecStart"] == "/usr/bin/mtkfs service %i"
    assert keys["RestartPreventExitStatus"].split() == ["2", "3", "4", "5", "7"]
    namespacing = {"PrivateMounts", "PrivateTmp", "PrivateDevices", "ProtectSystem",
                   "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
                   "ProtectKernelLogs", "ProtectControlGroups", "ReadOnlyPaths",
                   "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
                   "MountFlags"}  # fmt: skip
    assert not namespacing & keys.keys(), "these hide the FUSE mount from everyone else"
    assert "BindsTo" not in keys
    with pytest.raises(Exception, match="absolute"):
        systemd_files.render_unit(Path("mtkfs"))


def test_install_and_uninstall_under_a_prefix(tmp_path: Path) -> None:
    exe = Path("/opt/mtkfs/bin/mtkfs")
    done = systemd_files.install(tmp_path, exe)
    assert len(done) == 4
    rules = tmp_path / "etc/udev/rules.d/60-mtkfs.rules"
    unit = tmp_path / "etc/systemd/system/mtkfs@.service"
    conf = tmp_path / "etc/mtkfs/mtkfs.conf"
    assert rules.read_text() == RULES
    assert "ExecStart=/opt/mtkfs/bin/mtkfs service %i" in unit.read_text()
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    conf.write_text(conf.read_text() + "\n[usb-1-4]\nmode = rw\n")
    again = systemd_files.install(tmp_path, exe)
    assert any(line.startswith("kept") and str(conf) in line for line in again)
    assert "mode = rw" in conf.read_text(), "a user's configuration is never overwritten"
    gone = systemd_files.uninstall(tmp_path, exe)
    assert not rules.exists() and not unit.exists()
    assert conf.exists() and any("edited" in line for line in gone)
