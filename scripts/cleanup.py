#!/usr/bin/env python3
"""Delete old finished FlowForge tasks. `cleanup.py --help` for usage."""

import sys

try:
    from flowforge.ops.cleanup import entry
except ImportError as exc:  # run outside the virtualenv FlowForge is installed in
    print(f"cleanup.py: error: the flowforge package is not importable ({exc})", file=sys.stderr)
    sys.exit(2)  # an installation problem: exit code 2, as for configuration

if __name__ == "__main__":
    sys.exit(entry())
