"""Guest trace files (`--guest FILE`) are checked whole when they are loaded: a bad one is a
GuestTraceError naming the file and the field (exit 2 from the CLI), never a traceback, a
hang, a mid-run failure or a run that quietly does something else. Fuzzed with hypothesis
from the shipped busybox trace."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vmmem import MB, SettingsError
from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.errors import GuestTraceError
from vmmem.guests import GuestTrace, replay_epochs
from vmmem.guests import trace as trace_module
from vmmem.guests.trace import FORMAT
from vmmem.hyperv import Host, Idle
from vmmem.hyperv.recorded import RecordedBoot
from vmmem.memory import FramePool, GuestMemory
from vmmem.vdisk import VirtualDisk

SHIPPED = trace_module.data_dir() / "busybox.npz"
with np.load(SHIPPED, allow_pickle=False) as _z:
    BASE: dict[str, np.ndarray] = {k: _z[k] for k in _z.files}
PROVENANCE: dict[str, Any] = json.loads(str(BASE["provenance"]))
WAIT = 120  # seconds: only a hang reaches it


def two_vcpus(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shipped version 1 trace as version 2 with two vCPUs: its epochs dealt out in runs
    of 5, each vCPU's last epoch half full."""
    prov = json.loads(str(base["provenance"]))
    epoch_vcpu = ((np.arange(base["epoch_offsets"].size - 1) // 5) % 2).astype(np.uint16)
    per = prov["epoch_instructions"]
    counts = [int(n - 1) * per + per // 2 for n in np.bincount(epoch_vcpu)]
    prov.update(
        format=FORMAT, vcpus=2, vcpu_instructions=counts, instructions=sum(counts)
    )  # fmt: skip
    return {
        **base,
        "format": np.array(FORMAT),
        "epoch_vcpu": epoch_vcpu,
        "provenance": np.array(json.dumps(prov)),
    }


BASE_V2 = two_vcpus(BASE)
PROVENANCE_V2: dict[str, Any] = json.loads(str(BASE_V2["provenance"]))


def save(
    folder: Path, name: str = "t.npz", base: dict[str, np.ndarray] = BASE, **changes: Any
) -> str:
    """The shipped trace (or `base`) with `changes` (None: the array removed), saved
    uncompressed."""
    arrays = dict(base)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = folder / name
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


def provenance(**changes: Any) -> np.ndarray:
    return np.array(json.dumps({**PROVENANCE, **changes}))


def provenance_v2(**changes: Any) -> np.ndarray:
    """BASE_V2's provenance with `changes` (None: the key removed)."""
    prov = {**PROVENANCE_V2, **changes}
    return np.array(json.dumps({k: v for k, v in prov.items() if v is not None}))


def refused(path: str, field: str | None, match: str) -> GuestTraceError:
    with pytest.raises(GuestTraceError, match=match) as info:
        GuestTrace.load(path)
    err = info.value
    assert err.path == path and str(err).startswith(f"{path}: ")
    if field is not None:
        assert err.field == field and f"{path}: {field}: " in str(err)
    return err


def with_value(array: np.ndarray, index: int, value: int) -> np.ndarray:
    out = array.astype(np.int64 if value < 0 else np.uint64)
    out[index] = value
    return out


PAGES, WRITTEN, OFFSETS = BASE["pages"], BASE["written"], BASE["epoch_offsets"]

# Each bad trace the issue found, and what the error says.
CASES = {
    "provenance as a list": (
        {"provenance": np.array("[1, 2]")},
        "provenance",
        "expected a JSON object, got list",
    ),
    "page out of range": (
        {"pages": with_value(PAGES, 7, 1 << 16)},
        "pages",
        "page 65,536 lies outside the recorded memory",
    ),
    "string pages": ({"pages": PAGES.astype(str)}, "pages", "dtype <U.*: expected integers"),
    "2-D pages": ({"pages": PAGES[:-2].reshape(2, -1)}, "pages", "expected one dimension"),
    "float pages": ({"pages": PAGES.astype(float)}, "pages", "dtype float64: expected integers"),
    "short written": ({"written": WRITTEN[:-1]}, "written", "expected one per page"),
    "written as integers": ({"written": WRITTEN.astype(np.uint8)}, "written", "expected bool"),
    "negative epoch offset": (
        {"epoch_offsets": with_value(OFFSETS, 5, -3)},
        "epoch_offsets",
        "decreases",
    ),
    "huge epoch offset": (
        {"epoch_offsets": with_value(OFFSETS, len(OFFSETS) - 1, 1 << 40)},
        "epoch_offsets",
        "expected 0 to 175,554",
    ),
    "disk offset 2^63": (
        {"disk_offset": with_value(BASE["disk_offset"], 3, 1 << 63)},
        "disk_offset",
        "lies outside the disk",
    ),
    "request past the disk's end": (
        {"disk_offset": with_value(BASE["disk_offset"], 3, PROVENANCE["disk_size"] - 512)},
        "disk_offset",
        "past the disk's end",
    ),
    "disk epoch decreasing": (
        {"disk_epoch": BASE["disk_epoch"][::-1].copy()},
        "disk_epoch",
        "decreases",
    ),
    "short disk_write": (
        {"disk_write": BASE["disk_write"][:-1]},
        "disk_write",
        "34 elements for 35",
    ),
    "memory of 1 PB": (
        {"provenance": provenance(memory_bytes=1 << 50)},
        "provenance.memory_bytes",
        "to 12 TB",
    ),
    "negative memory": (
        {"provenance": provenance(memory_bytes=-(256 * MB))},
        "provenance.memory_bytes",
        "expected a whole number >= 0",
    ),
    "memory as text": (
        {"provenance": provenance(memory_bytes="256MB")},
        "provenance.memory_bytes",
        "expected a whole number",
    ),
    "epoch_instructions 0": (
        {"provenance": provenance(epoch_instructions=0)},
        "provenance.epoch_instructions",
        "expected at least 1",
    ),
    "negative instructions": (
        {"provenance": provenance(instructions=-5)},
        "provenance.instructions",
        "expected a whole number >= 0",
    ),
    "instructions for other epochs": (
        {"provenance": provenance(instructions=10**12)},
        "provenance.instructions",
        "for 1,599 epochs",
    ),
    "missing name": (
        {"provenance": np.array(json.dumps({k: v for k, v in PROVENANCE.items() if k != "name"}))},
        "provenance.name",
        "missing",
    ),
    "kernel as a list": (
        {"provenance": provenance(kernel=[1])},
        "provenance.kernel",
        r"expected \{file, bytes, sha256\} or null",
    ),
    "page size 8 KiB": (
        {"provenance": provenance(page_size=8192)},
        "provenance.page_size",
        "a trace's pages are 4 KiB",
    ),
    "epochs disagree": (
        {"provenance": provenance(epochs=7)},
        "provenance.epochs",
        "but the arrays hold 1,599",
    ),
    "no pages array": ({"pages": None}, "pages", "missing"),
    "object array": ({"pages": np.array([object()] * 3)}, "pages", "dtype object"),
    "format": ({"format": np.array("vmmem-guest-trace/3")}, "format", "expected one of"),
    "version 1 of two vCPUs": (
        {"provenance": provenance(vcpus=2)},
        "provenance.vcpus",
        "a vmmem-guest-trace/1 trace has one vCPU",
    ),
    "version 1 whose vCPU ran other instructions": (
        {"provenance": provenance(vcpu_instructions=[5])},
        "provenance.vcpu_instructions",
        "sum to 5, but provenance.instructions is 1,598,606,445",
    ),
    "provenance of another format": (
        {"provenance": provenance(format=FORMAT)},
        "provenance.format",
        "but the file's is 'vmmem-guest-trace/1'",
    ),
}

EPOCH_VCPU = BASE_V2["epoch_vcpu"]
COUNTS = PROVENANCE_V2["vcpu_instructions"]
# Version 2's own rules: the vCPU of each epoch and each vCPU's instructions.
CASES_V2 = {
    "no epoch_vcpu": ({"epoch_vcpu": None}, "epoch_vcpu", "missing"),
    "no vcpus": ({"provenance": provenance_v2(vcpus=None)}, "provenance.vcpus", "missing"),
    "no vcpu_instructions": (
        {"provenance": provenance_v2(vcpu_instructions=None)},
        "provenance.vcpu_instructions",
        "missing",
    ),
    "epoch_vcpu short": (
        {"epoch_vcpu": EPOCH_VCPU[:-1]},
        "epoch_vcpu",
        "1,598 elements for 1,599 epochs",
    ),
    "epoch_vcpu as floats": (
        {"epoch_vcpu": EPOCH_VCPU.astype(float)},
        "epoch_vcpu",
        "dtype float64: expected integers",
    ),
    "a vCPU beyond vcpus": (
        {"epoch_vcpu": with_value(EPOCH_VCPU, 3, 2)},
        "epoch_vcpu",
        r"vCPU 2: expected 0 to 1 \(provenance.vcpus\)",
    ),
    "a negative vCPU": ({"epoch_vcpu": with_value(EPOCH_VCPU, 3, -1)}, "epoch_vcpu", "vCPU -1"),
    "a vCPU that never ran": (
        {"provenance": provenance_v2(vcpus=3, vcpu_instructions=[*COUNTS, 1])},
        "epoch_vcpu",
        "vCPU 2 has no epoch",
    ),
    "no vCPU": ({"provenance": provenance_v2(vcpus=0)}, "provenance.vcpus", "expected 1 to 64"),
    "65 vCPUs": ({"provenance": provenance_v2(vcpus=65)}, "provenance.vcpus", "expected 1 to 64"),
    "one count for two vCPUs": (
        {"provenance": provenance_v2(vcpu_instructions=COUNTS[:1])},
        "provenance.vcpu_instructions",
        "1 counts for 2 vCPUs",
    ),
    "counts as text": (
        {"provenance": provenance_v2(vcpu_instructions="many")},
        "provenance.vcpu_instructions",
        "expected a list",
    ),
    "a negative count": (
        {"provenance": provenance_v2(vcpu_instructions=[COUNTS[0], -1])},
        "provenance.vcpu_instructions",
        "expected whole numbers >= 0, got -1",
    ),
    "counts that do not sum": (
        {"provenance": provenance_v2(vcpu_instructions=[COUNTS[0], COUNTS[1] + 1])},
        "provenance.vcpu_instructions",
        "but provenance.instructions is",
    ),
    "a vCPU with more than its epochs": (
        {
            "provenance": provenance_v2(
                vcpu_instructions=[COUNTS[0] + 2 * 10**6, COUNTS[1] - 2 * 10**6]
            )
        },
        "provenance.vcpu_instructions",
        r"\(vCPU 0\) for 800 epochs of 1,000,000: expected at least 799,000,000 .* at most "
        "801,000,000",
    ),
    "a vCPU short of its whole epochs": (
        {"provenance": provenance_v2(vcpu_instructions=[COUNTS[0] + 10**6, COUNTS[1] - 10**6])},
        "provenance.vcpu_instructions",
        r"\(vCPU 1\) for 799 epochs",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_trace_is_refused_naming_the_file_and_field(tmp_path, case):
    changes, field, match = CASES[case]
    refused(save(tmp_path, **changes), field, match)


@pytest.mark.parametrize("case", list(CASES_V2))
def test_each_bad_version_2_trace_is_refused_naming_the_file_and_field(tmp_path, case):
    changes, field, match = CASES_V2[case]
    refused(save(tmp_path, base=BASE_V2, **changes), field, match)


def test_the_version_2_base_loads_so_each_case_fails_for_its_change(tmp_path):
    trace = GuestTrace.load(save(tmp_path, base=BASE_V2))
    assert trace.format == FORMAT and trace.vcpus == 2
    assert trace.vcpu_instructions == COUNTS and trace.vcpu_epochs(1).size == 799


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty: not a guest trace"),
        (SHIPPED.read_bytes()[:100_000], "not a zip archive"),
        (b"PK\x03\x04" + bytes(5000), "not a zip archive"),
    ],
    ids=["empty", "truncated", "garbage"],
)
def test_a_file_that_is_no_trace_at_all(tmp_path, content, match):
    path = tmp_path / "t.npz"
    path.write_bytes(content)
    refused(str(path), None, match)


def test_a_damaged_member_is_refused(tmp_path):
    # The directory survives, some of the pages do not: the zip's CRC says so.
    path = save(tmp_path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("pages.npy")
    data = bytearray(Path(path).read_bytes())
    data[info.header_offset + 3000 : info.header_offset + 3100] = bytes(100)
    Path(path).write_bytes(bytes(data))
    refused(path, None, "not a readable vmmem guest trace: BadZipFile: Bad CRC-32")


def test_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "t.npz"
    os.mkfifo(fifo)
    done = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            GuestTrace.load(str(fifo))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    if not done.wait(WAIT):
        with open(fifo, "wb"):  # let the hung open go, then fail
            pass
        pytest.fail("GuestTrace.load waited on a FIFO")
    assert isinstance(errors[0], GuestTraceError)
    assert str(errors[0]) == f"{fifo}: is a FIFO, not a regular file; expected a guest trace (.npz)"


def test_a_folder_and_a_device_are_refused(tmp_path):
    folder = tmp_path / "x.npz"
    folder.mkdir()
    refused(str(folder), None, "is a folder")
    refused("/dev/zero", None, "is a character device")


def test_a_symlink_to_a_trace_is_read(tmp_path):
    link = tmp_path / "link.npz"
    link.symlink_to(SHIPPED)
    assert GuestTrace.load(str(link)).name == "busybox"


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "t.npz"
    with open(path, "wb") as f:  # sparse: nothing is written or read
        f.truncate(trace_module.MAX_FILE_BYTES + 1)
    refused(str(path), None, "a guest trace may have at most 1,073,741,824")


def test_an_array_header_claiming_too_much_is_refused_before_it_is_read(tmp_path):
    # A 1 KB member whose header says 2^40 pages: the header is checked before any memory is
    # taken for the data.
    header = {"descr": "<u4", "fortran_order": False, "shape": (1 << 40,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = save(tmp_path)
    rebuilt = tmp_path / "big.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rebuilt, "w") as dst:
        for info in src.infolist():
            data = buf.getvalue() + bytes(1024) if info.filename == "pages.npy" else src.read(info)
            dst.writestr(info.filename, data)
    refused(str(rebuilt), "pages", "1,099,511,627,776 elements: a guest trace has at most")


def test_a_zip_of_many_entries_is_refused_before_its_directory_is_read(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(65):  # one more than a trace may have (64; the file has 9)
            z.writestr(f"x{i}", b"")
    refused(str(path), None, "a zip archive of 65 entries")


def test_a_zip64_end_record_is_refused(tmp_path):
    path = Path(save(tmp_path))
    data = path.read_bytes()
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)
    path.write_bytes(data[:-22] + locator + data[-22:])
    refused(str(path), None, "a ZIP64 archive")


def test_the_cli_exits_2_naming_the_file(tmp_path):
    path = save(tmp_path, pages=PAGES.astype(float))
    result = CliRunner().invoke(cli, ["run", "--guest", path, "--scale", "8"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"--guest: {path}: pages: dtype float64" in result.output
    assert "Traceback" not in result.output


def test_a_host_of_other_pages_refuses_the_trace_when_the_vm_is_added(disk_dir):
    with Host("256MB", smart_paging_path=disk_dir, page_size=8192) as host:
        with pytest.raises(SettingsError, match="busybox.npz: provenance.page_size: "):
            host.add_vm("vm1", startup="64MB", workload=[RecordedBoot("busybox"), Idle()])


def test_replay_into_memory_of_other_pages_names_the_file(tmp_path):
    trace = GuestTrace.load("busybox")
    with FramePool(8 * MB, page_size=8192) as pool:
        with GuestMemory(pool, 8 * MB, paging_dir=tmp_path) as memory:
            with pytest.raises(GuestTraceError, match="busybox.npz: provenance.page_size"):
                replay_epochs(memory, trace, stop=1)


def test_a_loaded_trace_is_read_only_and_shared_safely():
    a, b = GuestTrace.load("busybox"), GuestTrace.load("busybox")
    with pytest.raises(ValueError):
        a.pages_array[0] = 1
    a.provenance["name"] = "changed"  # a caller's copy: the next load is untouched
    assert b.name == "busybox" and GuestTrace.load("busybox").name == "busybox"


# -- the fuzzer ---------------------------------------------------------------------------------

INTS = st.one_of(
    st.sampled_from([-1, 0, 1, 4095, 65535, 65536, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        INTS,
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
# Per-vCPU instruction counts near the valid ones: shifted between the vCPUs, one too many.
VCPU_COUNTS = st.one_of(
    st.integers(-(10**7), 10**7).map(lambda d: [COUNTS[0] + d, COUNTS[1] - d]),
    st.just([*COUNTS, 1]),
    st.just(COUNTS[:1]),
)
DTYPES = [
    np.float64, np.float32, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
    np.uint32, np.uint64, np.bool_, np.complex64, ">u4", ">i8", "U4", "S4",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The shipped trace's arrays, as version 1 or as version 2 of two vCPUs, with one to
    three mutations."""
    version_2 = draw(st.booleans())
    base, base_prov = (BASE_V2, PROVENANCE_V2) if version_2 else (BASE, PROVENANCE)
    arrays: dict[str, Any] = dict(base)
    prov: Any = dict(base_prov)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*sorted(set(base) - {"provenance"}), *["provenance"] * 4]))
        if key == "provenance":
            op = draw(st.sampled_from(["set", "delete", "replace", "text"]))
            if op in ("set", "delete") and not isinstance(prov, dict):
                prov = {}
            if op == "set":
                k = draw(st.sampled_from([*PROVENANCE_V2, "extra"]))
                prov[k] = draw(JSON | INTS | VCPU_COUNTS)
            elif op == "delete" and prov:
                prov.pop(draw(st.sampled_from(sorted(prov))))
            elif op == "replace":
                prov = draw(JSON)
            else:
                arrays["provenance"] = np.array(draw(st.text(max_size=20)))
                continue
            try:
                arrays["provenance"] = np.array(json.dumps(prov))
            except ValueError:  # a value json.dumps refuses: the provenance stays
                pass
            continue
        if key not in arrays:
            continue
        a = np.asarray(arrays[key])
        op = draw(st.sampled_from(["dtype", "shape", "cut", "grow", "set", "reverse", "drop"]))
        if op == "dtype":
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # complex to real drops a part: meant
                    a = a.astype(draw(st.sampled_from(DTYPES)))
            except (ValueError, TypeError, OverflowError):  # text that is not a number
                continue
        elif op == "shape":
            a = a.reshape(1, -1) if a.ndim else a.reshape(1)
        elif op == "cut" and a.ndim:
            a = a[: draw(st.integers(0, a.size))]
        elif op == "grow" and a.ndim:
            a = np.concatenate([a, a[: draw(st.integers(1, 3))]])
        elif op == "set" and a.ndim and a.size:
            value = draw(INTS | st.integers(0, 1000) | st.integers(0, 2))
            try:
                a = a.astype(np.result_type(a.dtype, np.min_scalar_type(value)))
            except TypeError:
                a = a.astype(object)
            a.flat[draw(st.integers(0, a.size - 1))] = value
        elif op == "reverse" and a.ndim:
            a = a[::-1]
        elif op == "drop":
            arrays.pop(key)
            continue
        arrays[key] = a
    return arrays


# One file in four is damaged after it is written (cut short, a byte flipped, bytes added).
FILE_DAMAGE = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
)


@pytest.fixture(scope="module")
def replay_rig(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("rig")
    with (
        FramePool(32 * MB) as pool,
        GuestMemory(pool, 32 * MB, frame_limit=8192, paging_dir=folder) as memory,
        VirtualDisk(folder / "disk.vmdisk", 16 * MB) as disk,
    ):
        yield memory, disk, folder


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(arrays=mutated(), damage=FILE_DAMAGE)
def test_fuzz_every_mutation_loads_and_replays_or_is_refused_naming_the_file(
    replay_rig, arrays, damage
):
    memory, disk, folder = replay_rig
    path = folder / "fuzz.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    if damage is not None:
        data = bytearray(path.read_bytes())
        kind, arg = damage
        if kind == "cut":
            data = data[: int(arg * len(data))]
        elif kind == "flip":
            data[min(len(data) - 1, int(arg * len(data)))] ^= 0xFF
        else:
            data += arg
        path.write_bytes(bytes(data))
    try:
        trace = GuestTrace.load(str(path))
    except GuestTraceError as err:
        assert err.path == str(path) and str(err).startswith(f"{path}: ")
        event(f"refused: {err.field or 'the file'}")
        return
    event(f"loaded and replayed: {trace.format}")
    # It loaded: everything a run reads of it works, and a few epochs replay, the last too.
    assert trace.epochs >= 1 and trace.instructions > 0 and repr(trace)
    assert trace.memory_pages >= 1 and trace.pages_touched <= trace.entries
    assert trace.disk_bytes_read + trace.disk_bytes_written >= 0
    assert trace.epoch_instructions_of(trace.epochs - 1) >= 0
    # Each vCPU's epochs partition the trace's; their instructions sum to the boot's.
    assert sum(trace.vcpu_epochs(v).size for v in range(trace.vcpus)) == trace.epochs
    per_epoch = [trace.epoch_instructions_of(e) for e in range(trace.epochs)]
    assert min(per_epoch) >= 0 and sum(per_epoch) == trace.instructions
    assert trace.disk_vcpu.size == trace.disk_requests and trace.vcpus <= 64
    for start in {0, max(0, trace.epochs - 2)}:
        result = replay_epochs(memory, trace, disk=disk, start=start, stop=start + 2)
        assert result.epochs == min(2, trace.epochs - start)
