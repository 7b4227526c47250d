"""The test plays systemd: it runs ``mtkfs@.service``'s own ExecStart line (``%i`` filled in)
with ``$NOTIFY_SOCKET`` pointing at a datagram socket it owns, and checks what a service
manager relies on — READY=1 only once the mount answers, STATUS= lines that say what is
going on, SIGTERM → STOPPING=1, commit, unmount, exit 0, and the documented exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fuse_available
from mounting import force_unmount, is_mounted

from mtkfs.systemd_files import UNIT_NAME, render_unit
from mtkfs.testing.disk import Layout, pseudo_random
from mtkfs.testing.sim_adbd import adb_server, running_device

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(300),
]

MTKFS_EXE = Path(sys.executable).parent / "mtkfs"


def exec_start(instance: str) -> list[str]:
    """The unit's ExecStart, as systemd would run it for ``mtkfs@INSTANCE.service``."""
    unit = render_unit(MTKFS_EXE)
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    return [word.replace("%i", instance) for word in shlex.split(line[len("ExecStart=") :])]


class Manager:
    """The service manager's side of sd_notify: a datagram socket and what arrived on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, timeout_s: float = 120, proc: subprocess.Popen[bytes] | None = None
                 ) -> dict[str, str]:  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in self.messages:
                if key in message:
                    return message
            if proc is not None and proc.poll() is not None:
                self.sock.settimeout(0.2)
            else:
                self.sock.settimeout(min(1.0, max(0.01, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"no {key}; daemon exited {proc.returncode}") from None
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        raise AssertionError(f"no {key} within {timeout_s} s; got {self.messages}")

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in self.messages if "STATUS" in m]


@contextlib.contextmanager
def service(
    instance: str, conf: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Manager, Path]]:
    folder = tmp_path / "etc-mtkfs"
    folder.mkdir(exist_ok=True)
    (folder / "mtkfs.conf").write_text(conf)
    manager = Manager(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(manager.path), "MTKFS_CONFIG_DIR": str(folder)}
    proc = subprocess.Popen(exec_start(instance), env=env, stderr=subprocess.PIPE)
    mountpoint = tmp_path / "run" / instance
    try:
        yield proc, manager, mountpoint
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
        force_unmount(mountpoint)
        manager.sock.close()


def _conf(tmp_path: Path, **sections: dict[str, str]) -> str:
    lines = ["[defaults]", f"mount_root = {tmp_path / 'run'}"]
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def test_the_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: make deps installs the systemd package")
    (tmp_path / UNIT_NAME).write_text(render_unit(MTKFS_EXE))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "mtkfs@usb-1-4.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr
    )


def test_ready_only_when_mounted_status_and_sigterm_stop(tmp_path: Path) -> None:
    conf = _conf(tmp_path, phone={"source": "sim:mt6765"})
    with service("phone", conf, tmp_path) as (proc, manager, mountpoint):
        ready = manager.wait_for("READY", proc=proc)
        # At the moment READY=1 arrives, the mount answers and holds the partitions.
        assert is_mounted(mountpoint)
        names = sorted(p.name for p in mountpoint.iterdir() if p.name.endswith(".img"))
        assert names, "READY=1 before the partition files were there"
        assert (mountpoint / names[0]).open("rb").read(4096)
        match = re.fullmatch(r"mounted (\d+) partitions of (.+) at (.+) \(ro\)", ready["STATUS"])
        assert match, ready
        assert int(match.group(1)) == len(names) and match.group(3) == str(mountpoint)
        assert manager.statuses()[0] == "opening sim:mt6765"
        proc.send_signal(signal.SIGTERM)
        stopping = manager.wait_for("STOPPING", proc=proc)
        assert stopping["STATUS"].startswith("SIGTERM: committing")
        assert proc.wait(timeout=60) == 0
        assert not is_mounted(mountpoint)
        assert not mountpoint.exists(), "the service leaves no empty mountpoint behind"


def test_rw_status_lines_follow_the_commit(p70a_rw: Layout, tmp_path: Path) -> None:
    conf = _conf(tmp_path, rwphone={"source": str(p70a_rw.folder), "mode": "rw",
                                    "journal_dir": str(tmp_path / "journal"),
                                    "commit_interval": "0"})  # fmt: skip
    data = pseudo_random("systemd/commit", 128 << 10)
    with service("rwphone", conf, tmp_path) as (proc, manager, mountpoint):
        ready = manager.wait_for("READY", proc=proc)
        assert ready["STATUS"].endswith("(rw)")
        with (mountpoint / "logo.img").open("r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        manager.wait_for("STATUS", proc=proc)
        deadline = time.monotonic() + 30
        while not any("written and verified" in s for s in manager.statuses()):
            assert time.monotonic() < deadline, manager.statuses()
            with contextlib.suppress(AssertionError):
                manager.wait_for("__never__", timeout_s=0.5, proc=proc)
        statuses = manager.statuses()
        committing = [m for s in statuses if (m := re.search(r"; committing (\d+) chunks?$", s))]
        assert committing and committing[0].string.startswith("mounted "), statuses
        chunks = int(committing[0].group(1))
        assert statuses[-1].endswith(f"; idle; {chunks} chunk(s) written and verified"), statuses
        # Written but not committed (no fsync, no close, no timer): SIGTERM must commit it.
        late = pseudo_random("systemd/late", 4096)
        fd = os.open(mountpoint / "logo.img", os.O_WRONLY)
        try:
            assert os.pwrite(fd, late, 1 << 20) == len(late)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    assert p70a_rw.read("logo", 0, len(data)) == data
    assert p70a_rw.read("logo", 1 << 20, len(late)) == late


def test_an_unplugged_device_takes_its_mount_down(p70a_rw: Layout, tmp_path: Path) -> None:
    """The folder of readback files stands in for the device: renamed away, the service sees
    it absent for ``gone_after`` seconds, unmounts, and exits 0 (no restart)."""
    conf = _conf(tmp_path, gone={"source": str(p70a_rw.folder), "gone_after": "1"})
    with service("gone", conf, tmp_path) as (proc, manager, mountpoint):
        manager.wait_for("READY", proc=proc)
        p70a_rw.folder.rename(tmp_path / "unplugged")
        stopping = manager.wait_for("STOPPING", timeout_s=30, proc=proc)
        assert stopping["STATUS"].startswith("device gone (path ")
        assert proc.wait(timeout=60) == 0
        assert not is_mounted(mountpoint)


@pytest.mark.parametrize(
    ("instance", "conf", "code", "says"),
    [
        ("nosuch", "", 2, "no source for instance 'nosuch'"),
        ("bad", "[bad]\nsource = /nonexistent/image.bin\n", 3, "/nonexistent/image.bin"),
        ("typo", "[typo]\nsource = sim:mt6765\ncahce_dir = /x\n", 2, "unknown key 'cahce_dir'"),
    ],
)
def test_failures_exit_with_the_documented_codes(
    instance: str, conf: str, code: int, says: str, tmp_path: Path
) -> None:
    with service(instance, _conf(tmp_path) + conf, tmp_path) as (proc, manager, _mountpoint):
        assert proc.wait(timeout=60) == code
        with contextlib.suppress(AssertionError):
            manager.wait_for("__drain__", timeout_s=0.5, proc=proc)
        failed = [s for s in manager.statuses() if s.startswith("FAILED: ")]
        assert len(failed) == 1 and says in failed[0], manager.statuses()
        assert "ERRNO" in manager.messages[-1]
        assert proc.stderr is not None and says in proc.stderr.read().decode()


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb not installed (make deps)")
def test_detect_lists_adb_phones_and_configured_boards(p70a: Layout, tmp_path: Path) -> None:
    """``mtkfs detect --json`` through Debian's real adb server with a fake phone, plus a
    U-Boot board from mtkfs.conf (its port present or not). USB phones need a bus we do not
    have in CI: ``detect`` then says nothing about USB, and never fails for it."""
    folder = tmp_path / "etc-mtkfs"
    folder.mkdir()
    tty = tmp_path / "ttyUSB7"
    tty.touch()
    (folder / "mtkfs.conf").write_text(
        f"[uboot-cam]\nsource = uboot:{tty}?baud=115200\n[uboot-gone]\nsource = uboot:"
        f"{tmp_path / 'ttyUSB9'}\n"
    )
    with running_device("android12", p70a) as phone, adb_server() as server:
        server.connect(phone.serial)
        env = {**os.environ, "MTKFS_CONFIG_DIR": str(folder),
               "ADB_SERVER_SOCKET": f"tcp:127.0.0.1:{server.port}"}  # fmt: skip
        done = subprocess.run([str(MTKFS_EXE), "detect", "--json"], env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        text = subprocess.run([str(MTKFS_EXE), "detect"], env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    devices = json.loads(done.stdout)["devices"]
    adb = [d for d in devices if d["kind"] == "adb"]
    assert [(d["serial"], d["source"], d["usable"]) for d in adb] == [
        (phone.serial, f"adb:{phone.serial}", True)
    ]
    assert adb[0]["service"] == f"mtkfs@adb-{phone.serial}.service"
    boards = {d["name"]: d for d in devices if d["kind"] == "configured"}
    assert boards["uboot-cam"]["present"] is True
    assert boards["uboot-cam"]["source"] == f"uboot:{tty}?baud=115200"
    assert boards["uboot-gone"]["present"] is False
    assert text.returncode == 0 and f"adb:{phone.serial}" in text.stdout
    assert "uboot-cam" in text.stdout and "present" in text.stdout


def test_detect_without_an_adb_server_still_answers(tmp_path: Path) -> None:
    env = {**os.environ, "MTKFS_CONFIG_DIR": str(tmp_path), "ADB_SERVER_SOCKET": "tcp:127.0.0.1:9"}
    done = subprocess.run([str(MTKFS_EXE), "detect", "--json"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert not [d for d in report["devices"] if d["kind"] == "adb"]
    assert any(note.startswith("adb server:") for note in report["notes"])


def test_install_systemd_command_under_a_prefix(tmp_path: Path) -> None:
    """The command users run: files in place, the unit runs this mtkfs, and nothing is
    reloaded for a prefix other than / (it is not the running system)."""
    env = {**os.environ, "PATH": f"{MTKFS_EXE.parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(MTKFS_EXE), "install-systemd", "--prefix", str(tmp_path)],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "etc/systemd/system/mtkfs@.service").read_text()
    assert f"ExecStart={MTKFS_EXE} service %i" in unit
    assert (tmp_path / "etc/udev/rules.d/60-mtkfs.rules").exists()
    assert "udevadm" not in done.stdout and "daemon-reload" not in done.stdout
    removed = subprocess.run(
        [str(MTKFS_EXE), "install-systemd", "--prefix", str(tmp_path), "--uninstall"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert not (tmp_path / "etc/systemd/system/mtkfs@.service").exists()
    assert not (tmp_path / "etc/mtkfs/mtkfs.conf").exists(), "unedited config goes too"
