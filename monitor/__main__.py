"""``python -m monitor`` and the ``keywatch`` command. The command's modules take a moment to
load; a Ctrl-C (or SIGTERM) meanwhile ends quietly, like one at any later point."""

import signal
import sys


def entry() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind like Ctrl-C
    try:
        from monitor.cli import main
    except KeyboardInterrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        print("keywatch: interrupted", file=sys.stderr)
        return 130  # monitor.cli.EXIT_INTERRUPTED
    return main()


if __name__ == "__main__":
    raise SystemExit(entry())
