"""tests/stack: the compose stack's files checked against each other, and its queries and rules
against real Prometheus / promtool / amtool (Debian packages prometheus and
prometheus-alertmanager)."""

from __future__ import annotations

import sys
from pathlib import Path

# The helpers beside this file (_prom, _queries) import as top-level modules here, and the
# repository root is importable (tests.helpers: the sidecar and OTLP sink launchers).
HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1]):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
