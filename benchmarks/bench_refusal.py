"""How fast the CLI refuses bad input: the battery of ``tests/test_refusal.py``, timed.

On demand, not part of the test suite::

    python benchmarks/bench_refusal.py               # every case once, then the summary
    python benchmarks/bench_refusal.py --repeats 3   # the median of 3 runs per case

Each case is a fresh ``python -c 'overtraining.run.main()'`` process (interpreter start
included, as a user sees it) with the bad arguments; the table gives its wall time, its
exit code, whether torch got imported before the refusal, and the one-line message.
Target: < 3 s per case on 2 CPU cores. Also prints the import time of the CLI modules
(``python -X importtime -c 'import overtraining.run'``), i.e. what a refusal pays before
its first check.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_refusal import BATTERY, make_files, run_cli  # noqa: E402  (after the path setup)


def import_time_s() -> float:
    """Cumulative import time of ``overtraining.run`` (``-X importtime``), in seconds."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import overtraining.run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stderr
    line = next(ln for ln in out.splitlines() if ln.rstrip().endswith("| overtraining.run"))
    return int(line.split("|")[1]) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(f"import overtraining.run: {import_time_s():.2f} s cumulative (-X importtime)")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp) / "files")
        print(f"{'s':>6}  rc  torch  message")
        for case, _ in BATTERY:
            argv = [a.format(dir=files["dir"]) for a in case]
            walls = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                proc = run_cli(argv, cwd=Path(tmp))
                walls.append(time.perf_counter() - t0)
            wall = statistics.median(walls)
            times.append(wall)
            torch = "yes" if "TORCH_IMPORTED=True" in proc.stdout else "no"
            msg = (proc.stderr.strip().splitlines() or [""])[-1]
            print(f"{wall:6.2f}  {proc.returncode:2d}  {torch:>5}  {msg[:110]}")
    print(
        f"{len(times)} cases: median {statistics.median(times):.2f} s, max {max(times):.2f} s, "
        f"{sum(t < 3 for t in times)}/{len(times)} under 3 s"
    )


if __name__ == "__main__":
    main()
