"""The benchmark's command line: `python bench/bench.py --help` says what it measures and how.

The parts, by concern, are in bench/benchlib/: load (payload pool, senders, counting sink),
systems (the sidecar variants, the file sink, the Collector), measure (steps, ramps, paired
ratios), gate (the regression gate), profile, outage, report, cli.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also in spawned senders

from benchlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
