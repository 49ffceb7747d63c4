#!/usr/bin/env python3
"""Check the FlowForge API, database and queue. `healthcheck.py --help` for usage."""

import sys

try:
    from flowforge.ops.healthcheck import entry
except ImportError as exc:  # run outside the virtualenv FlowForge is installed in
    print(
        f"healthcheck.py: error: the flowforge package is not importable ({exc})", file=sys.stderr
    )
    sys.exit(2)  # an installation problem: exit code 2, as for configuration

if __name__ == "__main__":
    sys.exit(entry())
