"""Where a run's files go: each VM's Smart Paging folder, the checks before anything is made
(not writable, its parent missing, writable by everyone without the sticky bit, too little
room, RAM-backed, a virtual disk vmmem did not make, in use by another run), and what runs
that died left there.

A Smart Paging or virtual-disk folder that does not exist is made by the run, with its missing
parents (0700, listed in its manifest, removed at its end when empty): the README's HDD command
names folders on a filesystem made a moment before. Where they land is shown (the device of
every location), so a mistyped path is seen."""

from __future__ import annotations

import os
from typing import NamedTuple

from vmmem.devices import DeviceInfo, device_for_path
from vmmem.errors import (
    LocationRefused,
    LocationWarning,
    NoCountersWarning,
    RamBackedWarning,
    SharedFolderWarning,
)
from vmmem.hyperv.rules import worst_case_smart_paging
from vmmem.hyperv.settings import DEFAULT_PAGE_SIZE, smart_paging_folder
from vmmem.lab.scenario import Scenario
from vmmem.sizes import MB
from vmmem.sizes import format_mb as mb

__all__ = [
    "CheckedLocations",
    "LocationRefused",
    "check_folder",
    "check_folders_free",
    "check_locations",
    "new_vhd_files",
    "paging_folders",
    "vhd_folders",
]


class CheckedLocations(NamedTuple):
    """What the one location check found: the filesystems the Smart Paging files will live
    on, and the warnings for people (typed, each once)."""

    infos: list[DeviceInfo]
    warnings: list[LocationWarning]


def paging_folders(s: Scenario, host_folder: str) -> dict[str, str]:
    """VM name -> its Smart Paging folder (absolute), as the Hyper-V layer will place it."""
    return {v.name: smart_paging_folder(host_folder, v.name, v.smart_paging_path) for v in s.vms}


def vhd_folders(s: Scenario, host_folder: str) -> dict[str, str]:
    """VM name -> its virtual disk's folder (absolute), as the Hyper-V layer will place it."""
    return {v.name: smart_paging_folder(host_folder, v.name, v.vhd_path) for v in s.vms}


def check_folder(folder: str, what: str) -> SharedFolderWarning | None:
    """Refuse (LocationRefused) a folder a run cannot use or make (a missing one is made, with
    its missing parents): a path that is not a folder or lies under a file, not writable, or
    writable by every user without the sticky bit. Returns the warning for people (others can
    write it, or another user owns it), if any. `what` names it in messages ("Smart Paging
    folder", "virtual-disk folder" ...)."""
    from vmmem.memory import folder_problem
    from vmmem.workspace import folder_safety

    path = os.path.abspath(folder)
    anchor = path
    while not os.path.lexists(anchor):
        anchor = os.path.dirname(anchor)
    problem = folder_problem(anchor)
    if problem is not None:
        # The memory layer's wording, of the folder itself or of where it would be made.
        code, text = problem
        if anchor == path:
            raise LocationRefused(f"{what} {folder} {text}")
        raise LocationRefused(f"{what} {folder} cannot be made: {anchor} {text}")
    refusal, warning = folder_safety(path)
    if refusal is not None:
        raise LocationRefused(f"{what} {folder}: {refusal}")
    return SharedFolderWarning(warning) if warning is not None else None


def _existing_ancestor(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_locations(s: Scenario, host_folder: str) -> CheckedLocations:
    """The one location check of a run: the filesystems the Smart Paging files will live on,
    and warnings for people (RAM-backed, no block-device counters, a folder others can write).

    Raises LocationRefused when a folder cannot be used or made (not a folder, not writable,
    writable by every user without the sticky bit), a virtual disk in the VMs' folders was not
    made by vmmem, or a filesystem has less free space than the worst case:
    every dynamic VM on it with a Smart Paging file as large as its Startup RAM (plus 64 MB of
    slack for the filesystem).
    """
    folders = paging_folders(s, host_folder)
    warnings: list[LocationWarning] = []
    checked: set[str] = set()

    def check(folder: str, what: str) -> None:
        if folder not in checked:
            checked.add(folder)
            warning = check_folder(folder, what)
            if warning is not None:
                warnings.append(warning)

    by_fs: dict[str, tuple[DeviceInfo, list[str]]] = {}
    for name, folder in folders.items():
        check(folder, "Smart Paging folder")
        anchor = _existing_ancestor(folder)
        info = device_for_path(anchor)
        key = f"{info.mountpoint}\0{info.device or info.source}"
        by_fs.setdefault(key, (info, []))[1].append(name)
    for folder in vhd_folders(s, host_folder).values():
        check(folder, "virtual-disk folder")
    # The VMs' virtual disks that a first run will make (kept afterwards), by filesystem.
    disks: dict[str, tuple[DeviceInfo, int]] = {}
    for path, size in new_vhd_files(s, host_folder).values():
        info = device_for_path(_existing_ancestor(os.path.dirname(path)))
        key = f"{info.mountpoint}\0{info.device or info.source}"
        disks[key] = (info, disks.get(key, (info, 0))[1] + size)
    for key, (info, size) in disks.items():
        if key not in by_fs and info.free_bytes < size + 64 * MB:
            raise LocationRefused(
                f"not enough free space for the VMs' virtual disks on {info.mountpoint} "
                f"({info.fstype}): they need {mb(size)} plus 64 MB, {mb(info.free_bytes)} is "
                "free. Choose another folder with --vhd-dir, or a smaller --scale."
            )
    infos = []
    for key, (info, names) in by_fs.items():
        worst = sum(worst_case_smart_paging(s.vm(n).startup, s.vm(n).dynamic) for n in names)
        vhds = disks.get(key, (info, 0))[1]
        need = worst + vhds + 64 * MB if worst or vhds else 0
        if info.free_bytes < need:
            disk_text = f" and {mb(vhds)} of virtual disks to make" if vhds else ""
            raise LocationRefused(
                f"not enough free space for the Smart Paging files on {info.mountpoint} "
                f"({info.fstype}): the worst case needs {mb(need)} ({', '.join(names)}: up to "
                f"their Startup RAM each{disk_text}, plus 64 MB), {mb(info.free_bytes)} is "
                "free. Choose another folder with --paging-dir, or a smaller --scale."
            )
        if info.ram_backed:
            warnings.append(
                RamBackedWarning(
                    f"{info.mountpoint} is RAM-backed ({info.fstype}): the Smart Paging files "
                    f"of {', '.join(names)} live in RAM there, so nothing real is measured"
                )
            )
        elif not info.has_counters:
            warnings.append(
                NoCountersWarning(
                    f"{info.mountpoint} ({info.fstype}) has no block-device counters: "
                    "the run cannot confirm that paging reached a device"
                )
            )
        infos.append(info)
    return CheckedLocations(infos, warnings)


def new_vhd_files(s: Scenario, host_folder: str) -> dict[str, tuple[str, int]]:
    """VM name -> (path, size) of each virtual disk the run will have to make (those that
    exist are reused and need no room). Raises LocationRefused for one that exists but is not
    a disk vmmem made (a symlink, another user's, a hard link, another size, no marker)."""
    from vmmem.hyperv.settings import vhd_file_name, vhd_size_for
    from vmmem.vdisk import MARKER_BYTES, disk_problem

    page = DEFAULT_PAGE_SIZE  # as the run's host counts
    out = {}
    for v in s.vms:
        size = vhd_size_for(v.settings, v.workload.phases(), page, v.startup // page)
        if not size:
            continue
        folder = smart_paging_folder(host_folder, v.name, v.vhd_path)
        path = os.path.join(folder, vhd_file_name(v.name, size))
        if not os.path.lexists(path) or _left_unfinished(path):
            # (an unfinished disk of a run that died is removed before this run makes its own)
            out[v.name] = (path, size + MARKER_BYTES)
        elif (problem := disk_problem(path, size)) is not None:
            raise LocationRefused(
                f"virtual disk {path} (VM {v.name}) {problem}. vmmem writes only disks it made"
            )
    return out


def _left_unfinished(path: str) -> bool:
    """`path` is a virtual disk whose making a dead run's trusted manifest names as cut short
    (the clean-up before the run removes it: vmmem.workspace)."""
    from vmmem.workspace import earlier_runs

    return any(path in r.existing_files for r in earlier_runs(os.path.dirname(path)))


def check_folders_free(folders: list[str]) -> list[str]:
    """Refuse folders another live run holds (LocationRefused, naming its pid); remove what
    runs that died left there, provably theirs. Returns messages for people."""
    from vmmem.workspace import active_runs, earlier_runs, remove_earlier_run

    for f in folders:
        live = active_runs(f)
        if live:
            who = ", ".join(f"pid {r.pid} (started {r.started_text})" for r in live)
            raise LocationRefused(
                f"the folder {f} is in use by another vmmem run: {who}. Two runs "
                "on one folder would measure each other's disk I/O; wait for it to finish, or "
                "use another --paging-dir or --vhd-dir"
            )
    notes = []
    for f in folders:
        for run in earlier_runs(f):
            if run.distrust is not None:
                notes.append(f"{f}: {run.describe()}")
                continue
            removed = remove_earlier_run(run)
            what = f"{len(removed)} Smart Paging file(s) removed" if removed else "no file left"
            notes.append(f"{f}: {run.describe()}: {what}")
    return notes
