"""Write docs/errors.md from the error catalog."""

from __future__ import annotations

import sys
from pathlib import Path

from safehold.errors.table import markdown

out = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
out.write_text(markdown())
sys.stdout.write(f"wrote {out.name}\n")
