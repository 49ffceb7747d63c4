#!/usr/bin/env python3
"""Delete old finished FlowForge tasks. `cleanup.py --help` for usage."""

import sys
from pathlib import Path

try:
    from flowforge.cli.cleanup import entry
except ImportError as exc:  # run outside the virtualenv FlowForge is installed in
    venv_python = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    hint = (
        f"run it with {venv_python}" if venv_python.exists()
        else "run `make venv`, then use .venv/bin/python"
    )  # fmt: skip
    print(f"cleanup.py: error: the flowforge package is not importable ({exc}); {hint}",
          file=sys.stderr)  # fmt: skip
    sys.exit(2)  # an installation problem: exit code 2, as for configuration

if __name__ == "__main__":
    sys.exit(entry())
