"""`python -m mlakv check|demo [flags]`: the mlakv command's check and demo, same flags, output and
exit codes (0 ok, 1 a failed check, 2 bad usage)."""

from __future__ import annotations

import signal
import sys

from . import _mlakv


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not getattr(_mlakv, "has_cli", False):
        print("mlakv: this build of the Python package has no check/demo (the CLI11 headers were missing when "
              "it was built)", file=sys.stderr)
        return 2
    # The C++ side writes to the same file descriptors: flush what Python holds first.
    sys.stdout.flush()
    sys.stderr.flush()
    return _mlakv.cli_main(["mlakv", *args])


if __name__ == "__main__":
    # The command runs in C++ for as long as it takes; let Ctrl-C stop it as it stops the CLI.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(main())
