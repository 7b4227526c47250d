"""``mtkfs restore DIR TARGET [PART...]``: write a dump (or a scatter ROM folder) back, through
the verified write pipeline, after showing the plan and checking every input file.

Order of business, and why:

1. Read the folder: a dump (``manifest.json``) or a ROM (``*scatter*.txt``, optional
   ``Checksum.ini``; Android sparse images expanded on the fly).
2. Open TARGET read-write and find its map. Where it has one, every item must land exactly on
   the target's partition of the same name (same region, offset and size for a dump; the image
   no bigger than the partition for a ROM) — a different layout would shift data across
   partitions. A blank target (no table found) takes the dump's own offsets.
3. Print the plan, always. Refuse the whole restore (nothing written) on a size mismatch, on a
   named protected partition that was not unlocked, or on RPMB. Protected items that were not
   named are skipped with a note.
4. Check every selected input against its manifest sha256 / Checksum.ini sum *before* the first
   write: a damaged backup must not half-overwrite a phone.
5. ``--dry-run`` stops here. Otherwise each item is written through :class:`WriteBack` —
   journalled, with the overwritten originals kept as a backup session (``mtkfs journal
   rollback`` undoes a restore), verified on the device chunk by chunk — and synced before the
   next one starts. Only verified data is reported as restored.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mtkfs.backup import inputs as inp
from mtkfs.backup import manifest as mf
from mtkfs.commit import WriteBack
from mtkfs.errors import BackupError, JournalPendingError, PlanError, UsageError
from mtkfs.journal import Journal, default_journal_root
from mtkfs.maps.model import PartitionMap, Region
from mtkfs.progress import Progress
from mtkfs.session import JobOptions, Session, open_session
from mtkfs.units import human_size
from mtkfs.volume import TABLES, is_never_writable, is_protected

log = logging.getLogger(__name__)

MAX_DIRTY_BYTES = 64 << 20


@dataclass(frozen=True)
class RestoreRequest:
    """What ``mtkfs restore`` was asked for."""

    folder: Path
    target: JobOptions
    names: tuple[str, ...] = ()
    unlock: tuple[str, ...] = ()
    unlock_all: bool = False
    dry_run: bool = False
    progress: str = "auto"
    journal_dir: Path | None = None


@dataclass
class Step:
    """One line of the plan: write ``item`` at ``region``+``offset``, or why not."""

    item: inp.Input
    region: str
    offset: int
    write: bool
    note: str = ""


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    origin: str = ""

    @property
    def writes(self) -> list[Step]:
        return [s for s in self.steps if s.write]


def load_inputs(folder: Path, regions: dict[str, Region]) -> tuple[list[inp.Input], str]:
    """The folder's items and a description of it."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder (give a dump folder or a ROM folder)")
    manifest = mf.load(folder)
    if manifest is not None:
        return inp.from_dump(folder, manifest), f"dump of {manifest.source}"
    scatter = inp.find_scatter(folder)
    if scatter is not None:
        return inp.from_rom(folder, scatter, regions), f"ROM folder ({scatter.name})"
    raise BackupError(
        f"{folder} holds neither manifest.json (an mtkfs dump) nor a *scatter*.txt (a ROM)"
    )


def _locked(name: str, kind: str, unlock: Collection[str], unlock_all: bool) -> str:
    """Why writing item ``name`` needs an unlock ("" when it does not)."""
    if kind == "gap" and not (unlock_all or TABLES in unlock):
        return f"partition-table area: --unlock {TABLES}"
    if kind == "region" and not (unlock_all or TABLES in unlock):
        return f"a whole region, tables included: --unlock {TABLES}"
    if is_protected(name) and not (unlock_all or name in unlock):
        return f"protected: --unlock {name}"
    return ""


def make_plan(
    items: Sequence[inp.Input],
    target_map: PartitionMap,
    regions: dict[str, Region],
    *,
    names: Sequence[str] = (),
    unlock: Collection[str] = (),
    unlock_all: bool = False,
) -> Plan:
    """Match items to the target; see the module docstring for the rules."""
    plan = Plan(origin=target_map.origin)
    by_name = {p.name: p for p in target_map.partitions if p.exposed}
    known = {i.name for i in items}
    for name in names:
        if name not in known:
            raise UsageError(
                f"{name}: not in the folder (it has: {', '.join(sorted(known)) or 'nothing'})"
            )
    blank = not by_name
    for item in items:
        chosen = not names or item.name in names
        if not chosen:
            continue
        step = Step(item, item.region, item.offset or 0, write=True)
        plan.steps.append(step)
        if is_never_writable(item.name) or item.region == "rpmb":
            step.write, step.note = False, "RPMB is never written"
            continue
        target = by_name.get(item.name) if item.kind in ("partition", "rom") else None
        if target is not None:
            step.region = target.region
            if item.kind == "partition":
                step.offset = target.offset_bytes
                if (target.region, target.offset_bytes, target.size_bytes) != (
                    item.region, item.offset, item.size
                ):  # fmt: skip
                    plan.problems.append(
                        f"{item.name}: the dump holds {human_size(item.size)} from "
                        f"{item.region}+{item.offset:#x}, the target's {item.name} is "
                        f"{human_size(target.size_bytes)} at {target.region}+"
                        f"{target.offset_bytes:#x} (another partition layout: restoring would "
                        "shift data across partitions)"
                    )
            else:
                room = target.size_bytes
                if item.name.lower() == "preloader":
                    room -= inp.EMMC_BOOT_HEADER_BYTES
                    step.offset = target.offset_bytes + inp.EMMC_BOOT_HEADER_BYTES
                else:
                    step.offset = target.offset_bytes
                if item.length > room:
                    plan.problems.append(
                        f"{item.name}: {item.path.name} is {human_size(item.length)}, the "
                        f"target's {item.name} holds {human_size(room)}"
                    )
        elif item.kind in ("partition", "rom") and not blank:
            plan.problems.append(
                f"{item.name}: the target's map ({target_map.origin}) has no such partition"
            )
        region = regions.get(step.region)
        if region is None:
            plan.problems.append(f"{item.name}: the target has no {step.region} region")
        elif step.offset + item.length > region.size_bytes:
            plan.problems.append(
                f"{item.name}: ends at {step.region}+{step.offset + item.length:#x}, past the "
                f"target's {step.region} ({human_size(region.size_bytes)})"
            )
        why = _locked(item.name, item.kind, unlock, unlock_all)
        if why:
            step.write, step.note = False, why
            if item.name in names:
                plan.problems.append(f"{item.name} is {why.replace(': ', '; add ')}")
    return plan


def print_plan(plan: Plan, description: str, target: str) -> None:
    """The plan, on stdout: it is the command's answer, printed even with ``--progress off``."""
    lines = [f"restore plan: {description} -> {target} (map: {plan.origin})"]
    for step in plan.steps:
        item = step.item
        action = "write" if step.write else f"skip ({step.note})"
        lines.append(
            f"  {item.name:<18} {step.region}+{step.offset:#011x} {human_size(item.length):>10}"
            f"  {item.path.name:<24} {action}"
        )
    total = sum(s.item.length for s in plan.writes)
    lines.append(f"  {len(plan.writes)} item(s), {human_size(total)} to write")
    for problem in plan.problems:
        lines.append(f"  REFUSED: {problem}")
    print("\n".join(lines), flush=True)


async def run_restore(request: RestoreRequest) -> int:
    writable = not request.dry_run  # a dry run never opens the target for writing
    async with open_session(request.target, writable=writable, need_map=False) as session:
        regions = dict(session.transport.regions)
        items, description = load_inputs(request.folder, regions)
        plan = make_plan(
            items,
            session.pmap,
            regions,
            names=request.names,
            unlock=request.unlock,
            unlock_all=request.unlock_all,
        )
        progress = Progress(sum(s.item.length for s in plan.writes), mode=request.progress)
        print_plan(plan, description, session.transport.description)
        if plan.problems:
            raise PlanError(
                f"restore refused, nothing was written: {plan.problems[0]}"
                + (
                    f" (and {len(plan.problems) - 1} more, see the plan)"
                    if plan.problems[1:]
                    else ""
                )
            )
        if not plan.writes:
            raise UsageError("nothing to restore (see the plan: every item was skipped)")
        for step in plan.writes:
            await _preloader_header_present(session, step)
        progress.message("checking every file against its manifest/Checksum.ini first…")
        for step in plan.writes:
            await trio.to_thread.run_sync(inp.verify, step.item)
        if request.dry_run:
            print("--dry-run: every file checks out; nothing was written", flush=True)
            return 0
        await _write_all(session, plan, request, progress)
        progress.close()
        total = sum(s.item.length for s in plan.writes)
        progress.message(
            f"restored {len(plan.writes)} item(s), {human_size(total)}, each verified on "
            f"{session.transport.description}"
        )
        return 0


async def _preloader_header_present(session: Session, step: Step) -> None:
    """A ROM's preloader.bin goes after the target's EMMC_BOOT header, which must be there."""
    if step.item.kind == "rom" and step.item.name.lower() == "preloader":
        head = await session.cache.read(step.region, 0, 9)
        if head != b"EMMC_BOOT":
            raise PlanError(
                "preloader: the target's boot area has no EMMC_BOOT header to keep, so "
                "preloader.bin (which has none) cannot be placed; flash it with SP Flash Tool"
            )


async def _write_all(
    session: Session, plan: Plan, request: RestoreRequest, progress: Progress
) -> None:
    transport = session.transport
    root = request.journal_dir or default_journal_root()
    journal = Journal.open(root, transport.device_id, transport.description)
    try:
        if journal.unfinished():
            raise JournalPendingError(
                f"{transport.description} has unfinished journalled writes; run `mtkfs journal "
                f"show {request.target.source}` and replay or roll them back first"
            )
        writeback = WriteBack(
            session.cache,
            journal,
            max_dirty_bytes=MAX_DIRTY_BYTES,
            partitions={s.item.name: (s.region, s.offset, s.item.length) for s in plan.writes},
        )
        for step in plan.writes:
            await _write_one(writeback, step, progress)
        await writeback.close()
    finally:
        journal.close()


async def _write_one(writeback: WriteBack, step: Step, progress: Progress) -> None:
    item = step.item
    progress.item(item.name, item.length)
    pieces = item.pieces()
    done = 0
    while True:
        piece = await trio.to_thread.run_sync(next, pieces, None)
        if piece is None:
            break
        at, block = piece
        if at + len(block) > item.length:
            raise BackupError(f"{item.path}: changed while being restored")
        await writeback.write(step.region, step.offset + at, block)
        progress.advance(at + len(block) - done)
        done = at + len(block)
    progress.advance(item.length - done)
    # Raises VerifyError unless every chunk of the item is verified on the device.
    await writeback.sync(step.region, step.offset, step.offset + item.length)
    progress.done("verified on the device")
