"""Commands that look before running: scenario, plan, disks, clean, guests, record-boot."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click

from vmmem.cli import render
from vmmem.cli.common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    CliFailure,
    cli,
    err_console,
    load_for_cli,
    load_scenarios,
    out_console,
    plan_for_cli,
    processors_option,
    scale_option,
    scenario_argument,
)
from vmmem.cli.importing import ScenarioCommand
from vmmem.errors import GuestTraceError

if TYPE_CHECKING:
    pass

# ---------------------------------------------------------------------------------------------
# scenario


@cli.command("scenario", cls=ScenarioCommand)
@click.argument(
    "scenarios", nargs=-1, type=click.Path(dir_okay=False), metavar="[SCENARIO.toml]..."
)
@scale_option
@click.option(
    "--toml",
    "as_toml",
    is_flag=True,
    help="Print the built-in article scenario as TOML (a starting point for your own).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the validated settings as JSON (a list when several files are given).",
)
def scenario_cmd(scenarios: tuple[str, ...], scale: float, as_toml: bool, as_json: bool) -> None:
    """Check scenario files and show what they hold, without running anything.

    Every file is checked; the first bad one ends the command with exit 2.

    \b
    Examples:
      vmmem scenario examples/mixed-priority.toml
      vmmem scenario examples/*.toml      check them all
      vmmem scenario --scale 8            the article's scenario at 1/8 size
      vmmem scenario --toml > my.toml     start your own from the article's
    """
    if as_toml:
        if scenarios:
            raise CliFailure(
                "--toml prints the built-in scenario: give no file with it", EXIT_USAGE
            )
        from vmmem.lab.scenario import ARTICLE_SCENARIO_TOML

        click.echo(ARTICLE_SCENARIO_TOML, nl=False)
        return
    loaded = [load_for_cli(path, scale) for path in scenarios] or [load_for_cli(None, scale)]
    if as_json:
        data = [s.to_dict() for s in loaded]
        click.echo(json.dumps(data if len(scenarios) > 1 else data[0], indent=2))
        return
    console = out_console()
    for i, s in enumerate(loaded):
        if i:
            console.print()
        render.scenario(console, s)


# ---------------------------------------------------------------------------------------------
# plan


@cli.command("plan")
@scenario_argument
@scale_option
@click.option(
    "--guest",
    metavar="NAME|FILE",
    help="Every VM boots this guest (vmmem guests: a recorded guest, a trace file, a Windows "
    "model or synthetic-boot): each restart's page-ins, page-outs and Smart Paging peak are "
    "predicted from its accesses.",
)
@click.option(
    "--guest-ips", type=click.FloatRange(min=1e6), metavar="N", help="With --guest: its "
    "guest instructions per second (default 2e9).",
)  # fmt: skip
@click.option(
    "--latency",
    metavar="TIME",
    help="The Smart Paging disk's 4 KiB read latency, for predicted boot times: e.g. 150us, "
    "8ms, the 4K read QD1 rate `vmmem disks --probe` prints (e.g. 15000iops), or the file "
    "`vmmem disks --probe FOLDER --json` wrote (its read and write rates).",
)
@click.option(
    "--write-latency", metavar="TIME", help="Its 4 KiB write latency (default: --latency)."
)
@processors_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead.")
def plan_cmd(
    scenario: str | None,
    scale: float,
    guest: str | None,
    guest_ips: float | None,
    latency: str | None,
    write_latency: str | None,
    processors: int | None,
    as_json: bool,
) -> None:
    """Will a restart need Smart Paging, how much per VM, and what would avoid it (no I/O).

    Walks the scenario's events with the Dynamic Memory rules and tries the
    article's remedies: less oversubscription (by how much), Minimum RAM =
    Startup RAM (for which VMs), moving a VM off the host (which one). Each
    restarting VM's paging is predicted from its boot's accesses (the
    synthetic boot's, or --guest's trace; exact LRU) and the memory it gets,
    with the RAM at which it stops paging, and its boot time given --latency.

    \b
    Examples:
      vmmem plan                          the article: 648 MB of Smart Paging
      vmmem plan examples/static-and-dynamic.toml
      vmmem plan examples/tight-host.toml --guest debian-12 --latency 150us
      vmmem plan --json | jq .remedies
    """
    from vmmem.errors import SettingsError
    from vmmem.lab.predict import Latency

    full, s = load_scenarios(scenario, scale, processors)
    if guest_ips is not None and guest is None:
        raise CliFailure("--guest-ips goes with --guest", EXIT_USAGE)
    if write_latency is not None and latency is None:
        raise CliFailure("--write-latency goes with --latency", EXIT_USAGE)
    lat = None
    try:
        if latency is not None and latency.endswith(".json"):
            if write_latency is not None:
                raise CliFailure("--write-latency: the probe file has the write rate", EXIT_USAGE)
            from vmmem.lab.predict import latency_from_probe

            lat = latency_from_probe(latency)
        elif latency is not None:
            from vmmem.guests.predict import parse_latency

            read = parse_latency(latency, "--latency")
            write = (
                read if write_latency is None else parse_latency(write_latency, "--write-latency")
            )
            lat = Latency(read, write)
        if guest is not None:
            from vmmem.guests import SYNTHETIC_BOOT, load_guest
            from vmmem.hyperv.workloads import WINDOWS_MODELS

            if guest != SYNTHETIC_BOOT and guest not in WINDOWS_MODELS:
                load_guest(guest)
            name = None if guest == SYNTHETIC_BOOT else guest
            full, s = full.with_guest(name, guest_ips), s.with_guest(name, guest_ips)
    except (SettingsError, GuestTraceError) as e:
        raise CliFailure(
            f"{'--guest: ' if isinstance(e, GuestTraceError) else ''}{e}", EXIT_USAGE
        ) from None
    p = plan_for_cli(full, s, lat)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    render.plan(out_console(), p)


# ---------------------------------------------------------------------------------------------
# disks


@cli.command("disks")
@click.argument(
    "folders", nargs=-1, type=click.Path(exists=True, file_okay=False), metavar="[FOLDER]..."
)
@click.option(
    "--probe",
    is_flag=True,
    help="Measure 4 KiB random reads and writes at queue depth 1 with O_DIRECT (about a "
    "second each, in a vmmem-probe-* scratch folder made there and removed) in each FOLDER "
    "given, else in the current folder only (--all: every location listed).",
)
@click.option(
    "--all",
    "probe_all",
    is_flag=True,
    help="With --probe and no FOLDER: probe every writable filesystem listed, other users' "
    "included (each gets a scratch folder at its mount point).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1, max=60),
    default=1.0,
    show_default=True,
    help="Probe time per location.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def disks_cmd(
    folders: tuple[str, ...], probe: bool, probe_all: bool, seconds: float, as_json: bool
) -> None:
    """Where a Smart Paging file could go: writable filesystems and their devices.

    Lists every writable mounted filesystem (or just the FOLDERs given) with
    its block device, model, rotational flag, filesystem and free space.
    RAM-backed ones (tmpfs, /dev/shm, zram) are flagged: a Smart Paging file
    there measures nothing. --probe writes only where you say: in each FOLDER
    given, else in the current folder (--all: on every filesystem listed).

    \b
    Examples:
      vmmem disks
      vmmem disks --probe                 the current folder's filesystem
      vmmem disks --probe /mnt/ssd /mnt/hdd
      vmmem disks --json
    """
    from vmmem.lab.disks import describe_location, list_locations
    from vmmem.lab.disks import probe as run_probe

    if probe_all and (folders or not probe):
        raise CliFailure("--all goes with --probe and no FOLDER", EXIT_USAGE)
    # A probe writes: without folders it stays in the current folder unless --all says so.
    where = list(folders) or ([] if probe_all or not probe else [os.getcwd()])
    try:
        infos = list_locations(where)
    except OSError as e:
        raise CliFailure(f"{e.filename or ''}: {e.strerror or e}", EXIT_REFUSED) from None
    probes = {}
    if probe:
        err = err_console()
        for info in infos:
            if not as_json:
                err.print(f"probing {info.path} ...", style="dim")
            probes[info.path] = run_probe(info.path, seconds=seconds)
    if as_json:
        out = []
        for info in infos:
            d = describe_location(info)
            if probe:
                d["probe"] = probes[info.path].to_dict()
            out.append(d)
        click.echo(json.dumps({"locations": out}, indent=2))
        return
    render.disks(out_console(), infos, probes)


# ---------------------------------------------------------------------------------------------
# clean


@cli.command("clean")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False), metavar="[FOLDER]...")
@click.option(
    "--disks",
    "remove_disks",
    is_flag=True,
    help="Also delete the VMs' kept virtual disks (*.vmdisk) that vmmem provably made (its "
    "marker, owned by you, one name); others are listed and left alone.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def clean_cmd(folders: tuple[str, ...], remove_disks: bool, as_json: bool) -> None:
    """Remove what vmmem runs that did not finish left behind; list the kept disks.

    A run that was killed (SIGKILL, a crash, a power cut) cannot delete its
    Smart Paging files. Every run keeps a lock file (vmmem-run-ID.lock) in
    each folder it uses, listing what it made there; once its process is
    gone, the files it lists are removed here if they are still provably its
    own (regular files with one name, in that folder, owned by you, named as
    vmmem names them) and the lock file is yours. Nothing else is ever
    touched: not your files, not symlinks, not a live run's files, not what
    a lock file another user wrote lists. `vmmem run` does the same for the
    folders it is about to use.

    A VM's virtual disk (<vm>-<N>MB.vmdisk) is kept between runs on purpose
    (made once, reused); they are listed with their size, and --disks deletes
    those vmmem made (not while a live run uses their folder).

    Looks in each FOLDER and its direct subfolders (default: ./vmmem-vms,
    the host folder, with one subfolder per VM).

    \b
    Examples:
      vmmem clean
      vmmem clean --disks                 also delete the kept virtual disks
      vmmem clean /mnt/ssd/paging --json
    """
    from vmmem.sizes import format_mb
    from vmmem.vdisk import find_kept_disks, remove_kept_disk
    from vmmem.workspace import active_runs, clean

    reports = []
    disks = []
    removed_disks: list[str] = []
    for folder in folders or ("vmmem-vms",):
        if not os.path.isdir(folder):
            if folders:
                raise CliFailure(f"{folder}: no such folder", EXIT_USAGE)
            continue
        reports += clean(folder)
        for sub in [folder, *_subfolders(folder)]:
            found = find_kept_disks(sub)
            disks += found
            if remove_disks and found and not active_runs(sub):
                removed_disks += [d.path for d in found if d.ours and remove_kept_disk(d)]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "folders": [r.to_dict() for r in reports],
                    "disks": [dict(d.to_dict(), removed=d.path in removed_disks) for d in disks],
                },
                indent=2,
            )
        )
        return
    where = ", ".join(folders or ("vmmem-vms",))
    if not reports:
        click.echo(f"nothing left by earlier runs in {where}")
    for rep in reports:
        for run in rep.earlier:
            gone = [f for f in rep.removed if f in run.files]
            click.echo(f"{rep.folder}: {run.describe()}: removed {len(gone)} Smart Paging file(s)")
        for run in rep.untrusted:
            click.echo(f"{rep.folder}: {run.describe()}")
        for run in rep.live:
            click.echo(
                f"{rep.folder}: in use by a live run, pid {run.pid} (started "
                f"{run.started_text}): left alone"
            )
    for d in disks:
        if d.path in removed_disks:
            state = "removed"
        elif not d.ours:
            state = f"not vmmem's, left alone: it {d.problem}"
        elif remove_disks:
            state = "in use by a live run: left alone"
        else:
            state = "kept for later runs (vmmem clean --disks deletes it)"
        click.echo(f"virtual disk {d.path} ({format_mb(d.allocated)} on disk): {state}")


def _subfolders(folder: str) -> list[str]:
    """The direct subfolders of `folder` (symlinked ones are not entered)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# guests


@cli.command("guests")
@click.option(
    "--startup",
    default="512MB",
    show_default=True,
    metavar="SIZE",
    help="Startup RAM the synthetic boot's figures are given for.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def guests_cmd(startup: str, as_json: bool) -> None:
    """The guests a VM can boot: recorded OS boots and the synthetic boot.

    A recorded guest is a real operating-system boot recorded under QEMU
    (vmmem record-boot): the guest-physical pages it touched, epoch by epoch
    of guest instructions, and its own disk reads. `--guest NAME` on run and
    compare boots it in every VM. The synthetic boot touches all of Startup
    RAM, as Windows does, with invented CPU time per page (docs/GUESTS.md).

    \b
    Examples:
      vmmem guests
      vmmem guests --json
      vmmem run --guest debian-12 --scale 4
    """
    from vmmem.errors import SettingsError
    from vmmem.lab import guest_profiles

    try:
        profiles = guest_profiles(startup)
    except SettingsError as e:
        raise CliFailure(f"--startup: {e}", EXIT_USAGE) from None
    if as_json:
        click.echo(json.dumps({"guests": [p.to_dict() for p in profiles]}, indent=2))
        return
    render.guests(out_console(), profiles)


@cli.command("record-boot")
@click.argument("out", type=click.Path(dir_okay=False), metavar="OUT.npz")
@click.option(
    "--image-dir",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    metavar="DIR",
    help="A guest image folder (vmlinuz, initrd.img, disk.img, guest.json), as "
    "tools/build_guest_images.py makes one.",
)
@click.option("--memory", metavar="SIZE", help="The VM's RAM (default: the image's guest.json).")
@click.option(
    "--epoch",
    type=click.IntRange(min=10_000),
    default=1_000_000,
    show_default=True,
    help="Guest instructions per epoch.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds before QEMU is stopped and the recording fails.",
)
@click.option(
    "--vcpus",
    type=click.IntRange(1, 64),
    default=None,
    help="The VM's vCPUs (default: the image's guest.json, else 1). More than one run in "
    "turn on one host thread (QEMU's single-threaded TCG).",
)
def record_boot_cmd(
    out: str, image_dir: str, memory: str | None, epoch: int, timeout: float, vcpus: int | None
) -> None:
    """Record a real OS boot under QEMU (TCG) as a guest trace.

    Boots the image with vmmem's TCG plugin (C, built on first use), which
    records every guest-physical 4 KiB page each vCPU touches, epoch by epoch
    of that vCPU's instructions, and QEMU's block trace events for its disk
    requests, each tied to the vCPU that issued it; the guest powers off when
    its boot reaches its target. Writes OUT.npz (docs/GUESTS.md) with the
    provenance: QEMU version, kernel and image checksums, command line,
    instructions per vCPU, pages and bytes read.

    \b
    Examples:
      python tools/build_guest_images.py busybox --out /var/tmp/busybox-image
      vmmem record-boot busybox.npz --image-dir /var/tmp/busybox-image
      vmmem record-boot busybox-2.npz --image-dir /var/tmp/busybox-image --vcpus 2
      vmmem run --guest ./busybox.npz --scale 4
    """
    from vmmem.errors import VmmemError
    from vmmem.guests.record import record_boot

    if os.path.lexists(out):
        raise CliFailure(f"{out} exists: choose another name (vmmem never overwrites it)", 2)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise CliFailure(f"cannot write {out}: its folder is missing or not writable", 2)
    err = err_console()
    err.print(f"recording the boot in {image_dir} (QEMU TCG; this takes a while) ...")
    try:
        trace = record_boot(
            out,
            image_dir=image_dir,
            memory=memory,
            epoch_instructions=epoch,
            timeout=timeout,
            vcpus=vcpus,
        )
    except VmmemError as e:
        raise CliFailure(str(e), 1) from None
    per_vcpu = ", ".join(f"{n:,}" for n in trace.vcpu_instructions)
    click.echo(
        f"wrote {out}: {trace.instructions:,} instructions ({trace.vcpus} vCPU"
        f"{'s' if trace.vcpus > 1 else ''}: {per_vcpu}) in {trace.epochs:,} epochs, "
        f"{trace.pages_touched:,} pages touched ({trace.pages_written:,} written), "
        f"{trace.disk_bytes_read:,} bytes read from disk"
    )
