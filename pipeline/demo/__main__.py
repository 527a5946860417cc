"""`python -m pipeline.demo ...` is `llm-pipeline demo ...`."""

import sys

from ..cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
