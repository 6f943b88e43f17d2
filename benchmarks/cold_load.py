"""Cold-process time of an actions-only ``load_chunks`` (what a CLI command pays before its first chunk).

    .venv/bin/python -m benchmarks.cold_load [--dataset ../shared/data/so101_record_test] [--repeats 5]

Each repeat starts a fresh interpreter (nothing imported, the environment's bytecode settings as
they are), imports ``action_tokenizers.data`` and loads every chunk of the dataset; the figure is
the wall time of the whole process. Also reports whether LeRobot, pandas or torch were imported
(none should be: the loader reads the parquet files with pyarrow). Results go to docs/vision.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from action_tokenizers.data import load_chunks
t1 = time.perf_counter()
cs = load_chunks(sys.argv[1], chunk_size=10, state_key="observation.state", with_tasks=True)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "chunks": len(cs),
                  "imported": [m for m in ("lerobot", "pandas", "torch") if m in sys.modules]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "so101_record_test"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _CHILD, args.dataset], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        runs.append({"wall_s": time.perf_counter() - start, **json.loads(out.strip().splitlines()[-1])})
    walls = [r["wall_s"] for r in runs]
    print(json.dumps({"dataset": args.dataset, "repeats": args.repeats, "median_wall_s": statistics.median(walls),
                      "min_wall_s": min(walls), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
