"""The ``vmmem`` command line: click commands, live progress, tables and plots. What it runs
and measures lives in `vmmem.lab`.

Entry point: ``vmmem = "vmmem.cli.main:main"``; ``python -m vmmem.cli`` does the same.
"""
