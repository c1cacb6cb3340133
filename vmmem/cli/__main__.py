"""``python -m vmmem.cli``: the same as the ``vmmem`` console script."""

from vmmem.cli.main import main

if __name__ == "__main__":
    main()
