"""Write docs/openapi.json, the vault server's API document, from the routes themselves."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from safehold.vault.server import create_app
from safehold.vault.service import VaultService

ROOT = Path(__file__).resolve().parent.parent

with tempfile.TemporaryDirectory() as tmp:
    svc = VaultService.init_folder(Path(tmp) / "vault")
    doc = create_app(svc).openapi()
    svc.close()
out = ROOT / "docs" / "openapi.json"
out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
sys.stdout.write(f"wrote {out.relative_to(ROOT)}\n")
