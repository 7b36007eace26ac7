"""A stand-in for the pynvml module, fed from a list of readings, for the sampler's NVML code
(pipeline/accounting/samplers.py). No GPU was at hand when it was written: the series below is
shaped like NVML's answers (utilisation in %, memory in bytes, power in mW, energy in mJ), not
recorded from a device."""
from __future__ import annotations

from types import SimpleNamespace

GIB = 2**30
# One GPU (80 GiB) through a training stage: start-up, 4 busy samples, an input-bound stretch.
SERIES = [  # (utilisation %, memory used bytes, power mW, total-energy counter mJ)
    (0, 1 * GIB, 70_000, 1_000_000),
    (95, 30 * GIB, 400_000, 1_500_000),
    (97, 31 * GIB, 410_000, 3_500_000),
    (96, 31 * GIB, 405_000, 5_500_000),
    (98, 32 * GIB, 415_000, 7_500_000),
    (5, 32 * GIB, 90_000, 8_000_000),
    (3, 32 * GIB, 85_000, 8_400_000),
]


class FakeNvml:
    """pynvml's calls the sampler makes, answering from `series`; each utilisation read of the
    first device moves to the next reading. `energy_counter=False`: a device without one."""

    class NVMLError(Exception):
        pass

    def __init__(self, series=SERIES, devices: int = 1, total_bytes: int = 80 * GIB, energy_counter: bool = True):
        self.series, self.devices, self.total, self.counter = list(series), devices, total_bytes, energy_counter
        self.i, self.calls = -1, []

    def _now(self):
        return self.series[min(max(self.i, 0), len(self.series) - 1)]

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, index):
        if index >= self.devices:
            raise self.NVMLError(f"Invalid Argument: no device {index}")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.nvmlDeviceGetHandleByIndex(int(uuid.rsplit("-", 1)[1]))     # `GPU-fake-<index>`

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle == 0:
            self.i += 1
        return SimpleNamespace(gpu=self._now()[0], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=self.total, used=self._now()[1], free=self.total - self._now()[1])

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._now()[2]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise self.NVMLError("Not Supported")
        return self._now()[3]
