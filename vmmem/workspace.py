"""What a run owns on disk: the folders it made, the Smart Paging files it may create, and a
lock file per folder that says so, so that a run deletes exactly what it made and nothing else.

Every folder a run uses gets a lock file `vmmem-run-<run id>.lock`, created with
O_CREAT|O_EXCL|O_NOFOLLOW (0600) and held with flock for the run's life. It is a manifest in
JSON lines: the first line names the run (tool, run id, pid, start time, host name), each further
line a path the run made there (a folder, or a Smart Paging file it is about to create). Lines are
only ever appended, so a run killed mid-write leaves at most one torn last line, which is ignored.

- A run deletes the files in its own manifest, the lock file, and the folders it made when they
  are empty. Never by pattern, never through a symlink (every check is lstat, every delete unlink
  or rmdir of a path the run listed).
- A lock file whose flock can be taken belongs to a run that is no longer alive (the kernel drops
  flock when a process dies, SIGKILL included): an *earlier run that did not finish*. Anyone
  who can write in the folder can write such a file, so its manifest is trusted only when the
  lock file is a regular file with one name (link count 1), owned by the user cleaning up, and
  named for the run id it records. Its listed files are then removed only when they are still
  provably its own: regular files with one name (not symlinks), directly in that folder, owned
  by the same user, named exactly as vmmem names paging files (`<name>-<12 hex>.slp`).
- A folder writable by every user without the sticky bit is refused (UnsafeFolderError):
  anyone could rename or replace the run's files and lock there. One that others can write
  with the sticky bit (as /tmp), or that another user owns, is used with a SharedFolderWarning.
- A lock file whose flock is held belongs to a live run (this process's included: flock is per
  open file). Callers decide what to do; the command line refuses to share a folder, since two
  runs on one disk would measure each other's I/O.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import time
import uuid
import warnings
import weakref
from dataclasses import dataclass, field

from .errors import SharedFolderWarning, VmmemError

__all__ = [
    "LOCK_PREFIX",
    "EarlierRun",
    "FolderInUseError",
    "SharedFolderWarning",
    "UnsafeFolderError",
    "Workspace",
    "CleanReport",
    "active_runs",
    "clean",
    "earlier_runs",
    "folder_safety",
    "is_paging_file_name",
    "remove_earlier_run",
]

LOCK_PREFIX = "vmmem-run-"
LOCK_SUFFIX = ".lock"
TOOL = "vmmem"
FOLDER_MODE = 0o700  # the folders hold guest memory
PAGING_SUFFIX = ".slp"
# The names GuestMemory gives its paging files (memory.py): the guest's (or a stem's) name made
# safe and cut to 64 characters, a dash, 12 hex digits of a random id, ".slp".
_PAGING_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}-[0-9a-f]{12}\.slp")


def is_paging_file_name(name: str) -> bool:
    """Whether a file name is one vmmem gives a paging file (Smart Paging, guest page file,
    saved state). A base name, not a path."""
    return _PAGING_NAME_RE.fullmatch(name) is not None


class UnsafeFolderError(VmmemError):
    """A folder every user can write without the sticky bit: anyone could rename or replace
    a run's files there."""


def folder_safety(folder: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """(refusal, warning) for putting a run's files in `folder`, or, when it does not exist
    yet, in the nearest folder above it that does (where it would be made). A refusal: every
    user can write it and it has no sticky bit. A warning: others can write it (with the
    sticky bit), or another user owns it (that user can delete or rename what is in it)."""
    path = os.path.abspath(os.fspath(folder))
    made = False
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path, made = parent, True
    try:
        st = os.stat(path)
    except OSError:
        return None, None  # missing or unreadable: the callers' own checks name that
    mode = stat.S_IMODE(st.st_mode)
    shown = f"mode {mode:04o}, owner uid {st.st_uid}"
    where = f"{path} (where {os.path.abspath(os.fspath(folder))} would be made)" if made else path
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        return (
            f"the folder {where} can be written by every user and has no sticky bit ({shown}): "
            "anyone could rename or replace vmmem's files there. Use a folder of your own, or "
            "set the sticky bit (chmod +t)",
            None,
        )
    if made:
        return None, None  # the folder vmmem makes is its own, 0700
    me = os.geteuid()
    if mode & stat.S_IWOTH:
        return None, (
            f"the folder {path} can be written by every user ({shown}): they can see the "
            "names and sizes of vmmem's files there (the sticky bit keeps them from removing "
            "them)"
        )
    if st.st_uid not in (me, 0):
        return None, (
            f"the folder {path} belongs to another user ({shown}), who can delete or rename "
            "vmmem's files there"
        )
    return None, None


class FolderInUseError(VmmemError):
    """Another live vmmem run holds a folder this one would use."""

    def __init__(self, folder: str, runs: list[EarlierRun]) -> None:
        who = ", ".join(f"pid {r.pid} (run {r.run_id}, started {r.started_text})" for r in runs)
        super().__init__(
            f"the folder {folder} is in use by another vmmem run: {who}. Two runs on one "
            "folder would measure each other's disk I/O; wait for it to finish, or choose "
            "another folder"
        )
        self.folder = folder
        self.runs = runs


@dataclass
class EarlierRun:
    """A run's lock file found in a folder, and what its manifest lists."""

    folder: str
    lock_path: str
    run_id: str
    pid: int
    started: float  # seconds since the epoch
    hostname: str
    files: list[str] = field(default_factory=list)
    made_folders: list[str] = field(default_factory=list)
    distrust: str | None = None  # why its manifest is not trusted (None: trusted)
    # virtual disks it created and had not finished making: path -> (st_dev, st_ino)
    unfinished_disks: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def started_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))

    @property
    def existing_files(self) -> list[str]:
        if self.distrust is not None:
            return []
        paging = [f for f in self.files if _provably_ours(f, self.folder)]
        disks = [
            p
            for p, ident in self.unfinished_disks.items()
            if _unfinished_disk(p, ident, self.folder)
        ]
        return paging + disks

    def describe(self) -> str:
        if self.distrust is not None:
            return f"{self.lock_path} is not trusted ({self.distrust}): left alone"
        return (
            f"left by an earlier run, pid {self.pid}, started {self.started_text}, "
            "that did not finish"
        )


@dataclass
class _Claim:
    folder: str
    lock_path: str
    fd: int
    files: list[str] = field(default_factory=list)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _write_line(fd: int, record: dict[str, object]) -> None:
    os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


def _lock_name(run_id: str) -> str:
    return f"{LOCK_PREFIX}{run_id}{LOCK_SUFFIX}"


class Workspace:
    """Everything one run (one Host) made on disk. See the module docstring.

    `claim(folder)` before putting a file in a folder; `record_file(path)` before the file is
    created; `release(folder)` when no VM uses it any more; `close()` at the end. Each returns or
    keeps the list of this run's files that were still there (`left_behind`), which are deleted.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.pid = os.getpid()
        self.started = time.time()
        self._claims: dict[str, _Claim] = {}
        self._made: list[str] = []  # folders this run made, outermost first
        self.left_behind: list[str] = []
        # A Workspace its owner never closed (an exception on the way, a Host never closed)
        # still releases what it holds when it is collected or the interpreter exits: a
        # finished process must not leave a manifest behind.
        self._finalizer = weakref.finalize(self, _release_all, self._claims, self._made, self.pid)

    def __repr__(self) -> str:
        return f"Workspace(run {self.run_id}, {len(self._claims)} folders)"

    @property
    def folders(self) -> list[str]:
        return list(self._claims)

    @property
    def files(self) -> list[str]:
        return [f for c in self._claims.values() for f in c.files]

    def claim(self, folder: str | os.PathLike[str]) -> str:
        """Make `folder` (and missing parents, 0700) if needed, and lock it for this run.
        Returns the folder's absolute path. Claiming a folder twice is a no-op."""
        path = os.path.abspath(os.fspath(folder))
        if path in self._claims:
            return path
        refusal, warning = folder_safety(path)
        if refusal is not None:
            raise UnsafeFolderError(refusal)
        if warning is not None:
            warnings.warn(SharedFolderWarning(warning), stacklevel=2)
        made = _make_folders(path)
        self._made.extend(made)
        try:
            lock_path = os.path.join(path, _lock_name(self.run_id))
            fd = os.open(
                lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except BaseException:
            self._tidy()
            raise
        try:
            # Blocking: the file was just made (O_EXCL), so only another run looking at it
            # (a shared lock for a moment) can hold it; failing then would end this run.
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write_line(
                fd,
                {
                    "tool": TOOL,
                    "run_id": self.run_id,
                    "pid": self.pid,
                    "started": self.started,
                    "hostname": socket.gethostname(),
                },
            )
            # Every folder this run made that holds this one, so that whichever manifest is
            # cleaned last after a crash can remove the shared parents too.
            for m in self._made:
                if _within(path, m):
                    _write_line(fd, {"made_folder": m})
        except BaseException:
            os.close(fd)
            _unlink_quietly(lock_path)
            self._tidy()
            raise
        self._claims[path] = _Claim(path, lock_path, fd)
        return path

    def record_file(self, path: str | os.PathLike[str]) -> None:
        """Note, before it is created, a file this run will create in a claimed folder."""
        p = os.path.abspath(os.fspath(path))
        claim = self._claims.get(os.path.dirname(p))
        if claim is None:
            raise VmmemError(f"{p} is not in a folder this run has claimed")
        if p not in claim.files:
            claim.files.append(p)
            _write_line(claim.fd, {"file": p})

    def record_new_disk(self, path: str | os.PathLike[str], st: os.stat_result) -> None:
        """Note a virtual disk this run has just created (O_EXCL) and is filling, by its inode:
        if the run dies before `record_disk_made`, a clean-up removes that very file."""
        p = os.path.abspath(os.fspath(path))
        claim = self._claims.get(os.path.dirname(p))
        if claim is None:
            raise VmmemError(f"{p} is not in a folder this run has claimed")
        _write_line(claim.fd, {"new_disk": p, "dev": st.st_dev, "ino": st.st_ino})

    def record_disk_made(self, path: str | os.PathLike[str]) -> None:
        """The virtual disk at `path` is whole (its marker written): it is kept, never removed
        as unfinished."""
        p = os.path.abspath(os.fspath(path))
        claim = self._claims.get(os.path.dirname(p))
        if claim is not None:
            _write_line(claim.fd, {"disk_made": p})

    def release(self, folder: str | os.PathLike[str]) -> list[str]:
        """This run is done with `folder`: delete its files there (if any are still there),
        its lock file and the folders it made, if empty. Returns the files it had to delete."""
        claim = self._claims.pop(os.path.abspath(os.fspath(folder)), None)
        if claim is None:
            return []
        try:
            left = _release_claim(claim)
        finally:
            self._tidy()
        self.left_behind.extend(left)
        return left

    def _tidy(self) -> None:
        """Remove the folders this run made that no claimed folder needs, if empty."""
        unused = [m for m in self._made if not any(_within(c, m) for c in self._claims)]
        _remove_folders(unused)
        self._made[:] = [m for m in self._made if os.path.lexists(m)]  # in place: see finalize

    def close(self) -> list[str]:
        """Release every folder (deepest first, so made parents can go too)."""
        left: list[str] = []
        try:
            for folder in sorted(self._claims, key=len, reverse=True):
                left.extend(self.release(folder))
        finally:
            _release_all(self._claims, self._made, self.pid)  # whatever an error left
        return left


def _release_claim(claim: _Claim) -> list[str]:
    """Delete a claim's files that are still there and provably its own, then its lock file;
    returns the files deleted."""
    try:
        left = [f for f in claim.files if _provably_ours(f, claim.folder)]
        for f in left:
            _unlink_quietly(f)
        _unlink_quietly(claim.lock_path)
    finally:
        os.close(claim.fd)  # after the unlink: nobody may take the lock of a live manifest
    return left


def _release_all(claims: dict[str, _Claim], made: list[str], pid: int) -> None:
    """Release every claim left and remove the made folders that are empty: the end of a
    Workspace whatever happened. Only in the process that made them (not a forked child)."""
    if os.getpid() != pid:
        return
    for folder in sorted(claims, key=len, reverse=True):
        claim = claims.pop(folder)
        try:
            _release_claim(claim)
        except OSError:
            pass
    _remove_folders(made)
    made[:] = [m for m in made if os.path.lexists(m)]


def _within(path: str, folder: str) -> bool:
    """`path` is `folder` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _make_folders(path: str) -> list[str]:
    """Create `path` and its missing parents with mode 0700 (whatever the umask); the ones
    made, outermost first."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    made: list[str] = []
    try:
        for m in reversed(missing):
            try:
                os.mkdir(m, FOLDER_MODE)
            except FileExistsError:
                continue  # made by someone else meanwhile: not ours
            os.chmod(m, FOLDER_MODE)  # the umask may have taken bits away; never added
            made.append(m)
    except BaseException:
        _remove_folders(made)
        raise
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
    return made


def _remove_folders(made: list[str]) -> None:
    for m in sorted(made, key=len, reverse=True):
        try:
            st = os.lstat(m)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            try:
                os.rmdir(m)  # only when empty: what anyone else put there stays
            except OSError:
                pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)  # unlink never follows a symlink
    except OSError:
        pass


def _provably_ours(path: str, folder: str) -> bool:
    """A listed file that is still what vmmem made: directly in `folder`, a regular file (not a
    symlink) with one name, owned by this user, named exactly as vmmem names paging files."""
    if os.path.dirname(path) != folder or not is_paging_file_name(os.path.basename(path)):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1


# The names the Hyper-V layer gives virtual disks: <vm>-<MB>MB.vmdisk (as vmmem.vdisk reads them).
_DISK_NAME = re.compile(r"^.+-[0-9]+MB\.vmdisk$")
_MAX_DISK_BYTES = 64 * 2**40  # the largest VHDX


def _unfinished_disk(path: str, ident: tuple[int, int], folder: str) -> bool:
    """A virtual disk the dead run created and never finished: still that very file (same
    device and inode), directly in `folder`, a regular file with one name, owned by this user,
    named as vmmem names its disks."""
    if os.path.dirname(path) != folder or not _DISK_NAME.match(os.path.basename(path)):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not (
        stat.S_ISREG(st.st_mode)
        and (st.st_dev, st.st_ino) == ident
        and st.st_uid == os.geteuid()
        and st.st_nlink == 1
        and st.st_size <= _MAX_DISK_BYTES
    ):
        return False
    # An inode number is reused as soon as a file is deleted: the file must also hold nothing
    # but what vmmem was writing into it (zeros; its marker comes last, and then it is whole).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != ident:
            return False
        while chunk := os.read(fd, 1 << 20):
            if chunk.count(0) != len(chunk):
                return False
    finally:
        os.close(fd)
    return True


def _lock_distrust(st: os.stat_result) -> str | None:
    """Why a lock file (its fstat) cannot be a manifest this user's run wrote, or None."""
    me = os.geteuid()
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != me:
        return f"written by uid {st.st_uid}, not by you (uid {me})"
    if st.st_nlink != 1:
        return f"it has {st.st_nlink} names (hard links)"
    return None


def _read_manifest(lock_path: str, folder: str) -> EarlierRun | None:
    """The manifest of a lock file, or None when it is not a vmmem manifest."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        distrust = _lock_distrust(st)
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
            if len(data) > 16 << 20:
                return None
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").splitlines()
    try:
        head = json.loads(lines[0])
        run = EarlierRun(
            folder=folder,
            lock_path=lock_path,
            run_id=str(head["run_id"]),
            pid=int(head["pid"]),
            started=float(head["started"]),
            hostname=str(head.get("hostname", "")),
        )
        if head.get("tool") != TOOL:
            return None
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None  # not a manifest vmmem wrote (a pid of Infinity, say)
    if distrust is None and os.path.basename(lock_path) != _lock_name(run.run_id):
        distrust = f"its name does not match the run id {run.run_id!r} it records"
    run.distrust = distrust
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line of a run that was killed mid-write
        if isinstance(rec, dict) and isinstance(rec.get("file"), str):
            run.files.append(rec["file"])
        elif isinstance(rec, dict) and isinstance(rec.get("made_folder"), str):
            run.made_folders.append(rec["made_folder"])
        elif (
            isinstance(rec, dict)
            and isinstance(rec.get("new_disk"), str)
            and type(rec.get("dev")) is int
            and type(rec.get("ino")) is int
        ):
            run.unfinished_disks[rec["new_disk"]] = (rec["dev"], rec["ino"])
        elif isinstance(rec, dict) and isinstance(rec.get("disk_made"), str):
            run.unfinished_disks.pop(rec["disk_made"], None)
    return run


def _lock_files(folder: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(
        os.path.join(folder, n)
        for n in names
        if n.startswith(LOCK_PREFIX) and n.endswith(LOCK_SUFFIX)
    )


def _is_held(lock_path: str) -> bool | None:
    """Whether a live process holds the lock file (None: it could not be opened)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _runs_in(folder: str | os.PathLike[str], held: bool) -> list[EarlierRun]:
    """The runs whose manifest is in `folder` and whose lock is (held) or is not held."""
    path = os.path.abspath(os.fspath(folder))
    return [
        run
        for lock in _lock_files(path)
        if (run := _read_manifest(lock, path)) is not None and _is_held(lock) is held
    ]


def active_runs(folder: str | os.PathLike[str]) -> list[EarlierRun]:
    """Live vmmem runs that hold `folder` (this process's own Hosts included)."""
    return _runs_in(folder, held=True)


def earlier_runs(folder: str | os.PathLike[str]) -> list[EarlierRun]:
    """Runs that left a manifest in `folder` and are no longer alive."""
    return _runs_in(folder, held=False)


def remove_earlier_run(run: EarlierRun) -> list[str]:
    """Delete what a dead run provably left in its folder: its listed paging files, its lock
    file, and the folders it made if they are empty. Returns the files deleted; [] if the run
    turned out to be alive (its lock could not be taken)."""
    try:
        fd = os.open(run.lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if run.distrust is not None or _lock_distrust(os.fstat(fd)) is not None:
            return []  # anyone could have written it: nothing it lists is removed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []  # alive after all, or another run is cleaning it right now
        try:
            now = os.lstat(run.lock_path)
        except OSError:
            return []  # another clean-up took it meanwhile
        if (now.st_dev, now.st_ino) != (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
            return []  # replaced since it was read
        removed = []
        for f in run.existing_files:
            try:
                os.unlink(f)
                removed.append(f)
            except OSError:
                pass
        _unlink_quietly(run.lock_path)
    finally:
        os.close(fd)
    # Only the lock's own folder and its parents: a manifest names nothing else to remove.
    _remove_folders([m for m in run.made_folders if _within(run.folder, m)])
    return removed


@dataclass
class CleanReport:
    """What `clean` found in one folder."""

    folder: str
    earlier: list[EarlierRun] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    live: list[EarlierRun] = field(default_factory=list)
    untrusted: list[EarlierRun] = field(default_factory=list)  # left alone: see distrust

    def to_dict(self) -> dict[str, object]:
        return {
            "folder": self.folder,
            "earlier_runs": [
                {"run_id": r.run_id, "pid": r.pid, "started": r.started_text, "files": r.files}
                for r in self.earlier
            ],
            "removed": self.removed,
            "live_runs": [
                {"run_id": r.run_id, "pid": r.pid, "started": r.started_text} for r in self.live
            ],
            "untrusted": [{"lock": r.lock_path, "why": r.distrust} for r in self.untrusted],
        }


def clean(folder: str | os.PathLike[str]) -> list[CleanReport]:
    """Remove what dead vmmem runs provably left in `folder` and in its direct subfolders
    (the VMs' folders of a host folder; symlinked subfolders are not entered). Live runs'
    files are left alone and reported."""
    top = os.path.abspath(os.fspath(folder))
    candidates = [top]
    try:
        with os.scandir(top) as it:
            candidates += sorted(
                e.path for e in it if e.is_dir(follow_symlinks=False) and not e.is_symlink()
            )
    except OSError:
        pass
    reports = []
    for f in candidates:
        rep = CleanReport(f, live=active_runs(f))
        for run in earlier_runs(f):
            if run.distrust is not None:
                rep.untrusted.append(run)
                continue
            rep.earlier.append(run)
            rep.removed += remove_earlier_run(run)
        if rep.earlier or rep.live or rep.untrusted:
            reports.append(rep)
    return reports
