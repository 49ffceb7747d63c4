#!/usr/bin/env python3
"""Check the FlowForge API, database and queue. `healthcheck.py --help` for usage."""

import sys

try:
    from flowforge.ops.healthcheck import entry
except ImportError as exc:  # run outside the virtualenv FlowForge is installed in
    sys.exit(f"healthcheck.py: error: the flowforge package is not importable ({exc})")

if __name__ == "__main__":
    sys.exit(entry())
