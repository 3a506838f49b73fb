"""``python -m ddif ...``: the same command line as the ``ddif`` script."""

from ddif.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
