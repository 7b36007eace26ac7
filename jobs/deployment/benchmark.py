"""Side-by-side timing of deployment variants: latency percentiles at batch 1 and throughput at
batch N, measured on the same inputs in one run."""
from __future__ import annotations

import time

import numpy as np


def measure(fn, x1, xn, warmup: int, iterations: int) -> dict:
    """Latency percentiles at batch 1 and throughput at batch N, same function, one run."""
    for _ in range(warmup):
        fn(x1)
        fn(xn)
    lat = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn(x1)
        lat.append(1e3 * (time.perf_counter() - start))
    start = time.perf_counter()
    for _ in range(iterations):
        fn(xn)
    throughput = iterations * len(xn) / (time.perf_counter() - start)
    return {"latency_b1_p50_ms": float(np.percentile(lat, 50)), "latency_b1_p90_ms": float(np.percentile(lat, 90)),
            "throughput_per_s": throughput}
