"""The stage sampler (pipeline/accounting/samplers.py): CPU utilisation of the given cores, NVML
figures from a series of readings, RAPL counters, the idle watch. Its overhead is measured by
benchmarks/sampler_bench.py, not here."""
from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest

from pipeline.accounting import samplers
from pipeline.accounting.samplers import (NvmlReader, Sampler, SamplerSettings, idle_reason, open_nvml,
                                          rapl_domains, rapl_energy_j, read_rapl_uj, summarise_gpu)
from tests.support.nvml import GIB, SERIES, FakeNvml

SPIN = "import time\nt = time.time()\nwhile time.time() - t < 2.0: pass"


def test_a_stage_spinning_one_core_of_two_reads_about_half(monkeypatch):
    """On an idle machine the spinning child holds one core: 0.5. The CI machine and this one are
    shared (other jobs' processes take turns on the same 2 cores), so the figure is checked against
    what the child really got: its own CPU time over the wall time, halved."""
    monkeypatch.setattr(samplers, "given_cores", lambda: 2)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    with Sampler(SamplerSettings(every_s=0.2), gpus=0) as sampler:
        subprocess.run([sys.executable, "-c", SPIN], check=True)
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result = sampler.result()
    assert child_cpu / wall > 0.3                           # it did spin (a core to itself: ~1.0)
    assert result["cpu_util"] == pytest.approx(child_cpu / (2 * wall), abs=0.03)
    assert result["samples"] >= 5 and result["sampled_peak_rss_mb"] > 5
    assert "gpu" not in result["unmeasured"] and result.get("gpu_util_mean") is None   # nothing to miss
    assert result["idle"] is None                     # 2 s is far under the 600 s window


def test_a_stage_too_short_to_measure_has_no_cpu_util_and_says_why(monkeypatch):
    """Over a few 10 ms CPU-clock ticks one tick reads as a core busy or idle: not a measurement."""
    monkeypatch.setattr(samplers, "given_cores", lambda: 2)
    with Sampler(SamplerSettings(every_s=0.2), gpus=0) as sampler:
        sum(range(10**5))
    result = sampler.result()
    assert result["cpu_util"] is None and "too short to measure" in result["unmeasured"]["cpu_util"]


def _read_all(nvml: FakeNvml) -> tuple[NvmlReader, list[dict]]:
    reader = NvmlReader(nvml, [0])
    return reader, [reader.read() for _ in SERIES]


def test_nvml_series_gives_utilisation_memory_power_and_counter_energy():
    reader, samples = _read_all(FakeNvml())
    cols = summarise_gpu(samples, [5.0 * i for i in range(len(samples))], reader.total_mb, reader.energy_j())
    assert cols == {"gpu_util_mean": round((0 + 95 + 97 + 96 + 98 + 5 + 3) / 7, 1),
                    "gpu_util_low_share": round(3 / 7, 4),          # 0, 5 and 3 are under 10%
                    "gpu_mem_peak_mb": 32 * 1024.0, "gpu_mem_total_mb": 80 * 1024.0,
                    "gpu_power_mean_w": round((70 + 400 + 410 + 405 + 415 + 90 + 85) / 7, 1),
                    "gpu_energy_j": 7400.0}                        # (8,400,000 - 1,000,000) mJ


def test_nvml_without_an_energy_counter_integrates_power():
    reader, samples = _read_all(FakeNvml(energy_counter=False))
    assert reader.energy_j() is None
    cols = summarise_gpu(samples, [5.0 * i for i in range(len(samples))], reader.total_mb, None)
    watts = [70, 400, 410, 405, 415, 90, 85]
    assert cols["gpu_energy_j"] == pytest.approx(sum(5 * (a + b) / 2 for a, b in zip(watts, watts[1:])))


def test_nvml_reads_the_devices_cuda_visible_devices_names(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-1,GPU-fake-0")
    reader, why = open_nvml(1, FakeNvml(devices=2))
    assert why is None and reader.handles == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert open_nvml(1, FakeNvml(devices=2))[0].handles == [1]


def test_nvml_reasons_when_it_cannot_be_read(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert open_nvml(0) == (None, "the stage asked for no GPU")
    reader, why = open_nvml(2, FakeNvml(devices=1))
    assert reader is None and "NVML could not be read" in why and "no device 1" in why


def test_sampler_with_nvml_fills_the_gpu_columns():
    nvml = FakeNvml()
    with Sampler(SamplerSettings(every_s=60), gpus=1, nvml=nvml) as sampler:
        pass                                           # two samples: at start and at stop
    result = sampler.result()
    assert result["gpu_mem_total_mb"] == 80 * 1024.0 and result["gpu_util_mean"] == (0 + 95) / 2
    assert "gpu" not in result["unmeasured"] and nvml.calls == ["init", "shutdown"]


def test_gpu_idle_for_the_window_is_flagged_with_what_to_check():
    settings = SamplerSettings(idle_window_s=10)
    window = [{"t": t, "cpu_s": t, "gpu_util": [u]} for t, u in ((0, 50), (5, 4), (10, 6))]
    reason = idle_reason(window, settings, cores=4)
    assert reason.startswith("GPU 0 averaged 5% utilisation over the last 10 s") and "batch size" in reason
    busy = [{"t": t, "cpu_s": t, "gpu_util": [u]} for t, u in ((0, 50), (5, 40), (10, 60))]
    assert idle_reason(busy, settings, cores=4) is None
    assert idle_reason(window[:2], settings, cores=4) is None        # 5 s: shorter than the window


def test_a_multi_core_stage_using_one_core_is_flagged():
    settings = SamplerSettings(idle_window_s=10)
    one_core = [{"t": 0, "cpu_s": 0.0}, {"t": 10, "cpu_s": 10.0}]
    assert "1.00 of its 4 cores busy over the last 10 s" in idle_reason(one_core, settings, cores=4)
    assert idle_reason(one_core, settings, cores=1) is None          # one core asked, one used
    assert idle_reason([{"t": 0, "cpu_s": 0.0}, {"t": 10, "cpu_s": 30.0}], settings, cores=4) is None


def test_rapl_energy_from_readable_package_counters(tmp_path):
    assert rapl_domains(tmp_path / "none")[1].endswith("does not exist (no RAPL here)")
    for name, uj in (("intel-rapl:0", 1_000_000), ("intel-rapl:1", 262_143_000_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "energy_uj").write_text(str(uj))
        (tmp_path / name / "max_energy_range_uj").write_text("262143999999")
    (tmp_path / "intel-rapl:0:0").mkdir()              # a sub-domain (core): inside package 0 already
    domains, why = rapl_domains(tmp_path)
    assert why is None and [d.name for d in domains] == ["intel-rapl:0", "intel-rapl:1"]
    start = read_rapl_uj(domains)
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("31000000")     # +30 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("5000000")      # wrapped: +~6 J
    assert rapl_energy_j(start, read_rapl_uj(domains)) == pytest.approx(30 + (262143999999 - 262143000000 + 5000000) / 1e6)


def test_the_sampler_flags_an_idle_gpu_while_the_stage_runs():
    idle_series = [(3, GIB, 60_000, 1_000_000 + 1000 * i) for i in range(200)]
    seen = []
    with Sampler(SamplerSettings(every_s=0.05, idle_window_s=0.3), gpus=1, nvml=FakeNvml(idle_series),
                 on_idle=seen.append) as sampler:
        time.sleep(0.8)
    result = sampler.result()
    assert seen == [result["idle"]] and result["idle"].startswith("GPU 0 averaged 3% utilisation over the last")
    assert result["gpu_util_low_share"] == 1.0 and result["gpu_util_mean"] == 3.0
