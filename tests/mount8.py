"""mount(8) as users run it, in a test: ``mount -t fuse.mtkfs`` has to find ``mtkfs`` itself.

mount(8) clears PATH (util-linux's ``sanitize_env``) before it runs ``/sbin/mount.fuse3``, whose
``/bin/sh -c 'mtkfs SOURCE MNT -o …'`` then searches only the shell's default PATH:
/usr/local/sbin, /usr/local/bin, /usr/sbin… An installed mtkfs is there; the test's venv is not,
and a test must not install anything. So :func:`mount8` runs mount(8) in a mount namespace of
its own, where a folder holding just ``mtkfs`` (the venv's) lies over /usr/local/sbin — no one
else sees it — and the FUSE mount comes back to the test through a shared bind mount of the
folder the mountpoint is in (:func:`shared_folder`).

Run as ``python mount8.py BIN SHARED MOUNT-ARGS...`` it is the part inside the namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

#: The first folders of dash's default PATH: the one that exists is covered.
_DEFAULT_PATH_FIRST = ("/usr/local/sbin", "/usr/local/bin")


@contextlib.contextmanager
def shared_folder(folder: Path) -> Iterator[Path]:
    """``folder`` as a shared mount: mounts made under it in :func:`mount8`'s namespace show
    here too (and unmounts made here reach that namespace)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def mount8(
    *args: str | Path, shared: Path, env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``mount ARGS`` with the venv's ``mtkfs`` where mount.fuse3's shell looks for it; mounts
    must be made under ``shared`` (a :func:`shared_folder`) to be seen by the caller."""
    bin_dir = shared.parent / "mount8-bin"
    bin_dir.mkdir(exist_ok=True)
    script = Path(sys.executable).parent / "mtkfs"  # the console script pip installed
    assert script.exists(), f"{script} missing: pip install -e . first"
    link = bin_dir / "mtkfs"
    if not link.is_symlink():
        link.symlink_to(script)
    command = ["unshare", "--mount", "--propagation", "unchanged", "--", sys.executable]
    command += [__file__, str(bin_dir), str(shared), *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )


def _mounts() -> list[tuple[str, str, str]]:
    """(target, fstype, source) of this namespace's mounts, parents before children."""
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            dash = fields.index("-")
            found.append((_unescape(fields[4]), fields[dash + 1], _unescape(fields[dash + 2])))
    return found


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def _in_namespace(argv: list[str]) -> int:
    bin_dir, shared, *mount_args = argv
    shared = os.path.realpath(shared)
    for target, fstype, source in reversed(_mounts()):
        if target == shared or target.startswith(shared + "/"):
            continue
        # Nothing done here may reach the rest of the machine…
        subprocess.run(["mount", "--make-private", target], capture_output=True, check=False)
        # …and our copies of other FUSE and loop mounts must not keep them alive after their
        # owners unmount them (a FUSE daemon waits for the last copy to go).
        if fstype.startswith("fuse") or source.startswith("/dev/loop"):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    cover = next(path for path in _DEFAULT_PATH_FIRST if os.path.isdir(path))
    subprocess.run(["mount", "--bind", bin_dir, cover], check=True)
    os.execvp("mount", ["mount", *mount_args])


if __name__ == "__main__":
    sys.exit(_in_namespace(sys.argv[1:]))
