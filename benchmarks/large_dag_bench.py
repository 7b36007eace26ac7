"""Large DAGs: `status`, `submit --dry-run` and `run all` on 1,000 no-op stages; prints one JSON line.

python benchmarks/large_dag_bench.py [--stages 1000] [--no-run]

Two shapes, each written to a temporary folder with its own results/logs: a chain (stage i needs
stage i-1) and a wide DAG (one source, stages-2 stages that need it, one sink that needs them all).
Every stage is of kind `noop` (tests/support/noop_stages.py), so what is timed is the engine alone:
loading and validating the config, planning, fingerprints, markers and per-stage files. Each
command runs as a user runs it (`python -m pipeline ...` from the repo root), so the times include
interpreter start-up (`startup_s`: `python -m pipeline --help`). Issue 9 item 10's goal: `run all`
well under a minute, `status` and `submit --dry-run` under 5 s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def chain(n: int) -> dict:
    """Listed last stage first: the order a depth-first walk has to recurse deepest for."""
    return {f"s{i:04d}": {"kind": "noop", "value": i, "needs": [f"s{i - 1:04d}"] if i else []}
            for i in reversed(range(n))}


def wide(n: int) -> dict:
    stages = {"source": {"kind": "noop"}}
    stages.update({f"w{i:04d}": {"kind": "noop", "value": i, "needs": ["source"]} for i in range(n - 2)})
    stages["sink"] = {"kind": "noop", "needs": [s for s in stages if s != "source"]}
    return stages


def write_config(folder: Path, name: str, stages: dict) -> tuple[Path, list[str]]:
    """The experiment file and the --set arguments that point it at folder's results/logs."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "stage_modules": ["tests.support.noop_stages"], "stages": stages},
                                   sort_keys=False))
    sets = [a for k in ("results", "logs", "data", "cache") for a in ("--set", f"paths.{k}={folder / k}")]
    return path, sets


def timed(*args: str, timeout: float = 600) -> float | str:
    """Seconds `python -m pipeline ARGS` took, or the last line of its error output."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit code {proc.returncode}"]
        return f"failed: {lines[-1][:200]}"
    return round(took, 2)


def bench_shape(folder: Path, name: str, stages: dict, run: bool) -> dict:
    config, sets = write_config(folder, name, stages)
    c = ["-c", str(config), *sets]
    out = {f"{name}_status_s": timed("status", *c),
           f"{name}_dry_run_s": timed("submit", "--dry-run", "--executor", "local", *c)}
    if run:
        out[f"{name}_run_all_s"] = timed("run", "all", *c)
        out[f"{name}_rerun_all_done_s"] = timed("run", "all", *c)
        out[f"{name}_status_after_run_s"] = timed("status", *c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--no-run", action="store_true", help="time status and --dry-run only")
    args = parser.parse_args()
    result: dict = {"stages": args.stages, "startup_s": timed("--help")}
    with tempfile.TemporaryDirectory(prefix="large_dag_") as tmp:
        for name, shape in (("chain", chain), ("wide", wide)):
            folder = Path(tmp) / name
            folder.mkdir()
            result.update(bench_shape(folder, name, shape(args.stages), run=not args.no_run))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
