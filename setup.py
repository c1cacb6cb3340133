# cffi has no pyproject-only form: this file only carries cffi_modules.
from setuptools import setup

setup(cffi_modules=["vmmem/_build_core.py:ffibuilder"])
