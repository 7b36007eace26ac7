"""`status` of a sweep of 10, 100 and 1,000 variants on the real (local) SLURM cluster: its time and
the scheduler commands it ran; prints one JSON line.

python benchmarks/sweep_status_bench.py [--variants 10 100 1000]

Each sweep is a two-stage experiment of `noop` stages (tests/support/noop_stages.py), submitted
held (`sbatch --hold`: every array task stays queued, nothing runs), then `status --json` is run
as a user runs it, with wrappers of SLURM's commands first on PATH that count the calls; the
arrays are cancelled at the end. `per_variant_ms` is status's time over the number of variants;
`startup_s` is `python -m pipeline --help` (interpreter and imports), in every status time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.cluster import counting_scheduler, scheduler_calls  # noqa: E402
from tests.support.experiments import write_experiment  # noqa: E402


def pipeline(*args: str, env: dict | None = None) -> tuple[float, str]:
    import os
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True).stdout
    return time.perf_counter() - start, out


def measure(n: int, folder: Path) -> dict:
    folder.mkdir(parents=True)
    config = str(write_experiment(folder, {
        "name": f"sweep{n}", "stage_modules": ["tests.support.noop_stages"],
        "paths": {"results": str(folder / "results"), "logs": str(folder / "logs")},
        "resources": {"cpus_per_task": 1, "mem": "100M", "time": "00:05:00", "extra": {"hold": True}},
        "stages": {"work": {"kind": "noop"}, "check": {"kind": "noop", "needs": ["work"]}}}))
    values = "[" + ", ".join(map(str, range(n))) + "]"
    env, log = counting_scheduler(folder)
    submit_s, out = pipeline("submit", "all", "-c", config, "--executor", "slurm",
                             "--sweep", f"stages.work.value={values}", env=env)
    arrays = sorted({w.split("_")[0] for line in out.splitlines() for w in line.split()[3:4] if "_" in w})
    scheduler_calls(log)
    try:
        status_s, text = pipeline("status", "-c", config, "--json", env=env)
        calls = scheduler_calls(log)
    finally:
        subprocess.run(["scancel", *arrays], check=False)
    rows = len(json.loads(text))
    return {"variants": n, "rows": rows, "submit_s": round(submit_s, 2), "status_s": round(status_s, 2),
            "per_variant_ms": round(1000 * status_s / n, 2), "status_calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    startup_s, _ = pipeline("--help")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [measure(n, Path(tmp) / str(n)) for n in args.variants]
    print(json.dumps({"benchmark": "sweep_status", "startup_s": round(startup_s, 2), "runs": runs}))


if __name__ == "__main__":
    main()
