"""Entry point of the `pfs` command: the light path for the common read-only verbs (lite.py),
else the full click CLI (group.py). Nothing is imported here that the light path does not need."""

from __future__ import annotations

import sys

from pfsfuse.tools.cli import lite


def main() -> None:
    code = lite.run(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from pfsfuse.tools.cli.group import cli  # click, and the verbs' modules as they run

    cli(prog_name="pfs")


if __name__ == "__main__":
    main()
