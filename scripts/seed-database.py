#!/usr/bin/env python3
"""Fill the FlowForge database with realistic tasks. `seed-database.py --help` for usage."""

import sys

try:
    from flowforge.ops.seed import entry
except ImportError as exc:  # run outside the virtualenv FlowForge is installed in
    sys.exit(f"seed-database.py: error: the flowforge package is not importable ({exc})")

if __name__ == "__main__":
    sys.exit(entry())
