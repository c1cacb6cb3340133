"""Where a run's files go: each VM's Smart Paging folder, the checks before anything is made
(missing, not writable, too little room, RAM-backed, in use by another run), and what runs
that died left there."""

from __future__ import annotations

import os

from vmmem.devices import DeviceInfo, device_for_path
from vmmem.hyperv.settings import smart_paging_folder
from vmmem.lab.scenario import Scenario
from vmmem.sizes import MB
from vmmem.sizes import format_mb as mb

__all__ = [
    "LocationRefused",
    "check_folders_free",
    "check_locations",
    "new_vhd_files",
    "paging_folders",
]


class LocationRefused(Exception):
    """A Smart Paging folder cannot be used: missing, not writable, or too little free space."""


def paging_folders(s: Scenario, host_folder: str) -> dict[str, str]:
    """VM name -> its Smart Paging folder (absolute), as the Hyper-V layer will place it."""
    return {v.name: smart_paging_folder(host_folder, v.name, v.smart_paging_path) for v in s.vms}


def _existing_ancestor(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_locations(s: Scenario, host_folder: str) -> tuple[list[DeviceInfo], list[str]]:
    """The filesystems the Smart Paging files will live on, and warnings for people.

    Raises LocationRefused when a folder is missing (its parent must exist), not writable, or
    its filesystem has less free space than the worst case: every dynamic VM on it with a
    Smart Paging file as large as its Startup RAM (plus 64 MB of slack for the filesystem).
    """
    folders = paging_folders(s, host_folder)
    by_fs: dict[str, tuple[DeviceInfo, list[str]]] = {}
    for name, folder in folders.items():
        if s.vm(name).smart_paging_path and not os.path.isdir(folder):
            raise LocationRefused(
                f"Smart Paging folder {folder} (VM {name}) does not exist or is not a folder"
            )
        anchor = _existing_ancestor(folder)
        if not os.path.isdir(anchor) or not os.access(anchor, os.W_OK | os.X_OK):
            raise LocationRefused(f"Smart Paging folder {folder} (VM {name}) is not writable")
        info = device_for_path(anchor)
        key = f"{info.mountpoint}\0{info.device or info.source}"
        by_fs.setdefault(key, (info, []))[1].append(name)
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
    warnings = []
    infos = []
    for key, (info, names) in by_fs.items():
        worst = sum(s.vm(n).startup for n in names if s.vm(n).dynamic)
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
                f"{info.mountpoint} is RAM-backed ({info.fstype}): the Smart Paging files of "
                f"{', '.join(names)} live in RAM there, so nothing real is measured"
            )
        elif not info.has_counters:
            warnings.append(
                f"{info.mountpoint} ({info.fstype}) has no block-device counters: "
                "the run cannot confirm that paging reached a device"
            )
        infos.append(info)
    return infos, warnings


def new_vhd_files(s: Scenario, host_folder: str) -> dict[str, tuple[str, int]]:
    """VM name -> (path, size) of each virtual disk the run will have to make (those that
    exist are reused and need no room)."""
    from vmmem.hyperv.settings import vhd_file_name, vhd_size_for

    page = 4096
    out = {}
    for v in s.vms:
        size = vhd_size_for(v.settings, v.workload.phases(), page, v.startup // page)
        if not size:
            continue
        folder = smart_paging_folder(host_folder, v.name, v.vhd_path)
        path = os.path.join(folder, vhd_file_name(v.name, size))
        if not os.path.exists(path):
            out[v.name] = (path, size)
    return out


def check_folders_free(folders: list[str]) -> list[str]:
    """Refuse folders another live run holds (LocationRefused, naming its pid); remove what
    runs that died left there, provably theirs. Returns messages for people."""
    from vmmem.workspace import active_runs, earlier_runs, remove_earlier_run

    for f in folders:
        live = active_runs(f)
        if live:
            who = ", ".join(f"pid {r.pid} (started {r.started_text})" for r in live)
            raise LocationRefused(
                f"the Smart Paging folder {f} is in use by another vmmem run: {who}. Two runs "
                "on one folder would measure each other's disk I/O; wait for it to finish, or "
                "use another --paging-dir"
            )
    notes = []
    for f in folders:
        for run in earlier_runs(f):
            removed = remove_earlier_run(run)
            what = f"{len(removed)} Smart Paging file(s) removed" if removed else "no file left"
            notes.append(f"{f}: {run.describe()}: {what}")
    return notes
