"""Run every benchmark script in this folder, one after the other, and print their tables.

Budgets are ratios or rates measured within one run (DESIGN §6); they are never asserted in
the test suite. Record the results in benchmarks/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    status = 0
    for script in sorted(HERE.glob("bench_*")):
        if script.suffix not in {".py", ".sh"}:
            continue
        print(f"\n## {script.name}\n", flush=True)
        command = [sys.executable, str(script)] if script.suffix == ".py" else ["bash", str(script)]
        status |= subprocess.call(command, cwd=HERE.parent)
    return status


if __name__ == "__main__":
    sys.exit(main())
