"""Child process of the harness: run one benchmark module, write its rows as JSON.

Usage (by the harness only): ``python -m benchmarks._worker PATH/bench_x.py 1|0 OUT.json``.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
from pathlib import Path

from .harness import load_module


def main() -> int:
    path, quick, out = Path(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3])
    payload: dict[str, object] = {"rows": [], "error": None}
    try:
        module = load_module(path)
        payload["rows"] = module.run(quick)
    except Exception as exc:
        traceback.print_exc()
        payload["error"] = f"{type(exc).__name__}: {exc}"
    # ru_maxrss is in KiB on Linux.
    payload["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        out.write_text(json.dumps(payload))
    except TypeError as exc:  # rows not JSON-serialisable (e.g. numpy scalars)
        out.write_text(json.dumps({"rows": [], "error": f"rows are not JSON: {exc}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
