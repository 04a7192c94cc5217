"""Entry point of ./taskqueue.pex and `python runner.py`: hands argv to the CLI, returns its exit code."""

import sys

from taskqueue.ops.cli import main as _cli_main


def main() -> int:
    return _cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
