#!/usr/bin/env python3
"""Fill the FlowForge database with realistic tasks. `seed-database.py --help` for usage."""

import sys

try:
    from flowforge.ops.seed import entry
except ImportError as exc:  # run outside the virtualenv FlowForge is installed in
    print(
        f"seed-database.py: error: the flowforge package is not importable ({exc})", file=sys.stderr
    )
    sys.exit(2)  # an installation problem: exit code 2, as for configuration

if __name__ == "__main__":
    sys.exit(entry())
