"""A benchmark's JSON artifact: its results beside the run's provenance (seller_dist.version), written
to `--out` or to a dated file under outputs/bench/. The docs' tables are generated only from
artifacts committed under docs/bench/ (tools.doc_tables)."""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any


def write_artifact(result: dict[str, Any], out: str | None, name: str) -> Path:
    """Write `result` (which holds a "provenance" entry) to `out`, or to outputs/bench/<name>-<UTC
    time>.json, with the load average at the run's end beside the one its provenance took at the start."""
    result["provenance"]["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    path = Path(out) if out else Path("outputs") / "bench" / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"[bench] artifact -> {path}", file=sys.stderr, flush=True)
    return path
