"""The README's promises: its two set-up commands and its library example stay true."""

import contextlib
import io
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_first_screen_has_exactly_the_two_commands_and_ci_runs_the_second():
    first = re.search(r"```console\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == [
        "pip install . && vmmem run",
        'pip install -e ".[test]" && python -m pytest',
    ]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert commands[1] in ci
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["scripts"]["vmmem"] == "vmmem.cli.main:main"


def test_library_example_runs(disk_dir, monkeypatch):
    """The example as written, at a quarter of the article's size so it takes seconds."""
    code = re.search(r"## The library\n\n```python\n(.*?)```", README, re.S).group(1)
    for full, small in [
        ('paging_dir="/var/tmp"', f"paging_dir={str(disk_dir)!r}"),
        (
            'Host("1400MB", balancer_interval=1.0, balancer_start_delay=5.0)',
            'Host("350MB", balancer_interval=0.05, balancer_start_delay=0)',
        ),
        (
            'startup="512MB", minimum="32MB", maximum="2048MB"',
            'startup="128MB", minimum="32MB", maximum="512MB"',
        ),
    ]:
        assert full in code, f"the README example changed: {full!r} is gone"
        code = code.replace(full, small)
    monkeypatch.chdir(disk_dir)  # the Host's default folder, ./vmmem-vms
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    # It pages for real, as it says: thousands of page-ins and page-outs, not one or two.
    page_ins, page_outs = (int(x) for x in out.getvalue().splitlines()[0].split()[:2])
    assert page_ins > 5_000 and page_outs > 5_000, out.getvalue()
    assert not any(name.endswith(".slp") for _, _, files in os.walk(disk_dir) for name in files)
