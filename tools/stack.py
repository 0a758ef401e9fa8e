#!/usr/bin/env python3
"""``python3 tools/stack.py COMMAND``: the command line of the harness package tools/harness
(the same as ``python3 -m tools.harness COMMAND`` from the repository root); see
tools/harness/cli.py. Standard library only, so it runs before the venv exists."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
