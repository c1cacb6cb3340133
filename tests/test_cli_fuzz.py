"""No tracebacks for user input: arbitrary scenario files through `vmmem scenario` and `vmmem
plan` end in exit 0 or 2 with a message, never an uncaught exception."""

from __future__ import annotations

import json
import math
import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmmem.cli.main import cli

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Any TOML value: strings with control characters, sizes with and without units, NaN and
# infinities, huge and negative integers, booleans, lists, inline tables.
SCALAR = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["512MB", "1.5GB", "0MB", "3MB", "1TB", "12TB", "-1MB", "all", "a\x00b"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "name"]), inner)
    ),
    max_leaves=4,
)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string (or invalid TOML: fine)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


BASE: dict[str, dict[str, object]] = {
    "": {"name": "fuzz", "description": "a fuzzed scenario"},
    "host": {"memory": "1400MB", "reserve": "0MB", "balancer_interval": 1.0},
    "vm": {
        "name": "vm",
        "count": 2,
        "startup": "512MB",
        "minimum": "32MB",
        "maximum": "2048MB",
        "buffer": 20,
        "priority": 50,
        "dynamic": True,
    },
    "vm.workload": {"boot_seconds": 6.0, "idle_demand": "250MB"},
    "vm.workload.boot": {"hot_fraction": 0.1, "write_ratio": 0.3},
    "vm.workload.idle": {"touch_interval": 0.5, "touches": 256},
    "event": {"action": "restart-host"},
}
KEYS = [(table, key) for table, keys in BASE.items() for key in keys] + [
    ("vm", "smart_paging_path"),
    ("host", "smart_paging_path"),
    ("event", "vms"),
    ("event", "seconds"),
    ("event", "timeout"),
]


def scenario_text(table_key: tuple[str, str] | None, value: object) -> str:
    tables = {t: dict(kv) for t, kv in BASE.items()}
    if table_key is not None:
        table, key = table_key
        tables[table][key] = value
    out = [f"{k} = {toml_value(v)}" for k, v in tables[""].items()]
    out += ["[host]"] + [f"{k} = {toml_value(v)}" for k, v in tables["host"].items()]
    out += ["[[vm]]"] + [f"{k} = {toml_value(v)}" for k, v in tables["vm"].items()]
    for sub in ("vm.workload", "vm.workload.boot", "vm.workload.idle"):
        out += [f"[{sub}]"] + [f"{k} = {toml_value(v)}" for k, v in tables[sub].items()]
    out += ['[[event]]\naction = "start"\nvms = "all"']
    out += ["[[event]]"] + [f"{k} = {toml_value(v)}" for k, v in tables["event"].items()]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz"))


def run_both(folder: str, content: bytes) -> None:
    path = os.path.join(folder, "s.toml")
    with open(path, "wb") as f:
        f.write(content)
    for command in ("scenario", "plan"):
        result = CliRunner().invoke(cli, [command, path])
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"vmmem {command} on {content[:300]!r}: {result.exception!r}\n{result.output}"
        )
        assert result.exit_code in (0, 2), (command, result.exit_code, result.output)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert "vmmem: error:" in result.output or "Usage:" in result.output


def test_the_base_scenario_is_valid(folder: str):
    """The fuzz below mutates one key of a scenario that works: else it would only ever
    exercise the first error."""
    path = os.path.join(folder, "base.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(scenario_text(None, None))
    result = CliRunner().invoke(cli, ["plan", path])
    assert result.exit_code == 0, result.output


@FUZZ
@given(table_key=st.sampled_from(KEYS), value=VALUE)
def test_every_known_key_with_any_value(
    folder: str, table_key: tuple[str, str], value: object
) -> None:
    run_both(folder, scenario_text(table_key, value).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(folder: str, content: bytes) -> None:
    run_both(folder, content)


TOMLISH = st.text(
    alphabet='[]{}="., \n\t#abcdefhimnorstuvwxyzMGB0123456789-+_\x00\x1b\u00e9', max_size=200
)


@FUZZ
@given(TOMLISH)
def test_tomlish_text(folder: str, text: str) -> None:
    run_both(folder, text.encode("utf-8"))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"\xff\xfe\x00name = 1", "not a text file in UTF-8"),
        (scenario_text(("vm", "name"), "a\x00b").encode(), "control characters"),
        (scenario_text(("vm", "name"), "red\x1b[31m").encode(), "control characters"),
        (scenario_text(("", "name"), "tab\there").encode(), "control characters"),
        (scenario_text(("host", "balancer_interval"), float("nan")).encode(), "balancer_interval"),
    ],
)
@pytest.mark.parametrize("command", ["scenario", "plan", "run"])
def test_bad_input_named_without_traceback(
    tmp_path, content: bytes, message: str, command: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
