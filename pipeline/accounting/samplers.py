"""What a stage used, measured in its own process: a light thread the runner starts for every
stage. Every `every_s` seconds it reads the CPU time of the stage's process (and its children)
against the cores it was given, its resident memory, and, where they can be read, its GPUs through
NVML (nvidia-ml-py, optional) and the CPU packages' energy through RAPL (/sys/class/powercap).
A figure that cannot be had stays None, with one line saying why; nothing is estimated (no TDP).

It also watches for idle resources: GPUs under `idle_gpu_util_below` percent, or a stage given
several cores that keeps fewer than `idle_cores_below` busy, for `idle_window_s` seconds. Such a
stage gets a log line with what to check, an `idle` note in its record, and is stopped when
`stop_idle` is set (the runner records it failed, with that reason).
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import threading
import time
from dataclasses import field
from pathlib import Path
from typing import Callable

# NVML samples under this GPU utilisation (percent) count as "low" (gpu_util_low_share).
LOW_GPU_UTIL = 10.0
# CPU times tick in 10 ms steps (USER_HZ 100): over a span of a few ticks one tick more or less
# reads as a whole core busy or idle, so a shorter stage's CPU use is not measured.
MIN_CPU_SPAN_S = 1.0
RAPL_ROOT = Path("/sys/class/powercap")


@dataclasses.dataclass
class SamplerSettings:
    """The experiment's `sampler:` section (configs/defaults.yaml)."""
    every_s: float = field(default=5.0, metadata={"min": 0.05, "help": "seconds between samples"})
    idle_window_s: float = field(default=600.0, metadata={
        "min": 0.1, "help": "idle this long (seconds) before a stage is flagged: a training stage's "
                            "start-up, evaluation and checkpoints take less"})
    idle_gpu_util_below: float = field(default=10.0, metadata={"min": 0, "help": "GPU utilisation percent"})
    idle_cores_below: float = field(default=1.5, metadata={
        "min": 0, "help": "a stage given 2 or more cores that keeps fewer busy on average is flagged"})
    stop_idle: bool = field(default=False, metadata={"help": "stop a flagged stage (recorded failed)"})


class IdleStop(RuntimeError):
    """The stage was stopped because it left its resources idle (sampler.stop_idle)."""


def given_cores() -> int:
    """The cores this process may run on (the job's, where the scheduler binds them)."""
    return len(os.sched_getaffinity(0))


class CpuReader:
    """CPU seconds and resident memory of this process and its live children (psutil)."""

    def __init__(self):
        import psutil
        self.psutil, self.me = psutil, psutil.Process()

    def read(self, live_children: bool = True) -> tuple[float, float]:
        """(CPU seconds so far, RSS in MiB now), children that exited included in the CPU time.
        Listing the live children scans /proc (~4 ms on a busy node): the samples at a stage's
        start and end skip it (none yet; by the end a stage has waited for its children)."""
        t = self.me.cpu_times()
        cpu, rss = t.user + t.system + t.children_user + t.children_system, self.me.memory_info().rss
        for child in self.me.children(recursive=True) if live_children else ():
            try:
                ct = child.cpu_times()
                cpu += ct.user + ct.system
                rss += child.memory_info().rss
            except self.psutil.Error:       # it ended between the listing and the read
                continue
        return cpu, rss / 2**20


class NvmlReader:
    """The stage's GPUs through NVML. `nvml` is the pynvml module (a recorded fake in tests)."""

    def __init__(self, nvml, devices: list[int | str]):
        """`devices`: NVML indexes, or UUIDs (`GPU-...`) as CUDA_VISIBLE_DEVICES may name them."""
        self.nvml = nvml
        nvml.nvmlInit()
        self.handles = [nvml.nvmlDeviceGetHandleByUUID(d) if isinstance(d, str) else
                        nvml.nvmlDeviceGetHandleByIndex(d) for d in devices]
        self.total_mb = sum(nvml.nvmlDeviceGetMemoryInfo(h).total for h in self.handles) / 2**20
        self.energy_start = self._energy_mj()

    def _energy_mj(self) -> float | None:
        """Sum of the devices' total-energy counters (mJ), None where one has none (pre-Volta)."""
        try:
            return float(sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles))
        except self.nvml.NVMLError:
            return None

    def read(self) -> dict:
        """{util: [percent per GPU], mem_mb: used by all, power_w: all together or None}."""
        nvml = self.nvml
        util = [float(nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self.handles]
        mem = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in self.handles) / 2**20
        try:
            power = sum(nvml.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1000.0
        except nvml.NVMLError:
            power = None
        return {"util": util, "mem_mb": mem, "power_w": power}

    def energy_j(self) -> float | None:
        """Energy since the reader started from the counters, where every device has one."""
        end = self._energy_mj()
        return None if end is None or self.energy_start is None else (end - self.energy_start) / 1000.0

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def open_nvml(gpus: int, nvml=None) -> tuple[NvmlReader | None, str | None]:
    """(reader, None) for the stage's GPUs, or (None, why NVML figures are empty)."""
    if gpus <= 0:
        return None, "the stage asked for no GPU"
    if nvml is None:
        try:
            import pynvml as nvml          # nvidia-ml-py: pip install -e '.[gpu]'
        except ImportError:
            return None, "nvidia-ml-py is not installed (pip install -e '.[gpu]')"
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = [int(d) if d.isdigit() else d for d in visible] or list(range(gpus))
    try:
        return NvmlReader(nvml, devices[:gpus]), None
    except Exception as err:               # no driver, no device: NVMLError and its subclasses
        return None, f"NVML could not be read ({type(err).__name__}: {err})"


def rapl_domains(root: Path = RAPL_ROOT) -> tuple[list[Path], str | None]:
    """The CPU package domains whose energy counter this process can read, or why there are none."""
    if not root.is_dir():
        return [], f"{root} does not exist (no RAPL here)"
    domains = [d for d in sorted(root.glob("intel-rapl:*")) if ":" not in d.name.split("intel-rapl:", 1)[1]]
    readable = [d for d in domains if os.access(d / "energy_uj", os.R_OK)]
    if not readable:
        return [], f"no readable {root}/intel-rapl:*/energy_uj (root only on most kernels)"
    return readable, None


def read_rapl_uj(domains: list[Path]) -> list[tuple[int, int]]:
    """(energy counter, its wrap-around range) in microjoules per domain."""
    out = []
    for d in domains:
        wrap = d / "max_energy_range_uj"
        out.append((int((d / "energy_uj").read_text()), int(wrap.read_text()) if wrap.exists() else 0))
    return out


def rapl_energy_j(start: list[tuple[int, int]], end: list[tuple[int, int]]) -> float:
    """Joules between two readings; a counter that wrapped adds its range once."""
    total = 0
    for (a, wrap), (b, _) in zip(start, end):
        total += b - a if b >= a else b + wrap - a
    return total / 1e6


def summarise_gpu(samples: list[dict], times: list[float], total_mb: float, energy_j: float | None) -> dict:
    """NVML samples -> the GPU columns. Energy: the counters' where given, else power integrated
    over the sample times (trapezoids), None where power was never read."""
    utils = [u for s in samples for u in s["util"]]
    power = [(t, s["power_w"]) for t, s in zip(times, samples) if s["power_w"] is not None]
    if energy_j is None and len(power) >= 2:
        energy_j = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(power, power[1:]))
    return {"gpu_util_mean": round(sum(utils) / len(utils), 1) if utils else None,
            "gpu_util_low_share": round(sum(u < LOW_GPU_UTIL for u in utils) / len(utils), 4) if utils else None,
            "gpu_mem_peak_mb": round(max(s["mem_mb"] for s in samples), 1) if samples else None,
            "gpu_mem_total_mb": round(total_mb, 1),
            "gpu_power_mean_w": round(sum(p for _, p in power) / len(power), 1) if power else None,
            "gpu_energy_j": None if energy_j is None else round(energy_j, 1)}


def idle_reason(window: list[dict], settings: SamplerSettings, cores: int) -> str | None:
    """Samples covering the last idle_window_s ({t, cpu_s, gpu_util}) -> what is idle, or None."""
    if len(window) < 2 or window[-1]["t"] - window[0]["t"] < settings.idle_window_s:
        return None
    span = window[-1]["t"] - window[0]["t"]
    gpu = [s["gpu_util"] for s in window[1:] if s.get("gpu_util")]
    for i in range(len(gpu[0]) if gpu else 0):
        mean = sum(g[i] for g in gpu) / len(gpu)
        if mean < settings.idle_gpu_util_below:
            return (f"GPU {i} averaged {mean:.0f}% utilisation over the last {span:.0f} s (under "
                    f"{settings.idle_gpu_util_below:g}%): check the input pipeline (data loader workers, "
                    "cpus_per_task), the batch size, and that the model and data are on the GPU")
    busy = (window[-1]["cpu_s"] - window[0]["cpu_s"]) / span
    # a GPU stage's cores feed its GPUs: judged by the GPUs above, not by how many cores are busy
    if not gpu and cores >= 2 and busy < settings.idle_cores_below:
        return (f"{busy:.2f} of its {cores} cores busy over the last {span:.0f} s: lower cpus_per_task, or "
                "give the work more threads (the library's thread count, data loader workers)")
    return None


class Sampler:
    """The sampling thread of one stage: `with Sampler(...) as s: <run>`, then `s.result()`."""

    def __init__(self, settings: SamplerSettings, gpus: int = 0, log=None,
                 on_idle: Callable[[str], None] | None = None, nvml=None, rapl_root: Path = RAPL_ROOT):
        self.settings, self.log, self.on_idle = settings, log, on_idle
        self.cores, self.cpu = given_cores(), CpuReader()
        self.gpu, gpu_why = open_nvml(gpus, nvml)
        self.rapl, rapl_why = rapl_domains(rapl_root)
        # a stage without GPUs has no GPU figures to miss
        self.why = {k: v for k, v in (("gpu", gpu_why if gpus > 0 else None), ("cpu_energy", rapl_why)) if v}
        self.samples: list[dict] = []
        self.gpu_samples: list[dict] = []
        self.idle: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stage-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.rapl_start = read_rapl_uj(self.rapl) if self.rapl else None
        self._sample(live_children=False)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stop(self) -> dict:
        """End the sampling (once; later calls return the same) and return `result()`."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread is not threading.current_thread():
                self._thread.join()
            self._sample(live_children=False)
            self.rapl_end = read_rapl_uj(self.rapl) if self.rapl else None
            if self.gpu:
                self.gpu_energy = self.gpu.energy_j()
                self.gpu.close()
        return self.result()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.every_s):
            self._sample()
            if self.idle is None:
                self._check_idle()

    def _sample(self, live_children: bool = True) -> None:
        now, (cpu_s, rss) = time.monotonic(), self.cpu.read(live_children)
        sample = {"t": now, "cpu_s": cpu_s, "rss_mb": rss}
        if self.gpu:
            reading = self.gpu.read()
            self.gpu_samples.append({**reading, "t": now})
            sample["gpu_util"] = reading["util"]
        self.samples.append(sample)

    def _check_idle(self) -> None:
        since = self.samples[-1]["t"] - self.settings.idle_window_s
        first = bisect.bisect_right(self.samples, since, key=lambda s: s["t"]) - 1   # a sample a window old
        if first < 0:
            return                          # the stage is younger than the window
        window = self.samples[first:]
        reason = idle_reason(window, self.settings, self.cores)
        if reason:
            self.idle = reason
            if self.log:
                self.log.warning("idle: %s%s", reason, "; stopping the stage (sampler.stop_idle)"
                                 if self.settings.stop_idle else " (sampler.stop_idle: true stops such a stage)")
            if self.on_idle:
                self.on_idle(reason)

    def result(self) -> dict:
        """The sampled columns (record.SAMPLED_COLUMNS), `idle`, and `unmeasured`: why some are empty."""
        first, last = self.samples[0], self.samples[-1]
        span = last["t"] - first["t"]
        measured = span >= MIN_CPU_SPAN_S
        if not measured:
            self.why["cpu_util"] = f"ran under {MIN_CPU_SPAN_S:g} s: too short to measure its CPU use"
        out = {"cpu_util": round((last["cpu_s"] - first["cpu_s"]) / (span * self.cores), 4) if measured else None,
               "sampled_peak_rss_mb": round(max(s["rss_mb"] for s in self.samples), 1),
               "samples": len(self.samples), "idle": self.idle}
        if self.gpu:
            out.update(summarise_gpu(self.gpu_samples, [s["t"] for s in self.gpu_samples], self.gpu.total_mb,
                                     self.gpu_energy))
        if self.rapl_start is not None:
            out["cpu_energy_j"] = round(rapl_energy_j(self.rapl_start, self.rapl_end), 1)
        out["unmeasured"] = self.why
        return out
