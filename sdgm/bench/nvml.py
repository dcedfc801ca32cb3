"""GPU memory, power and energy while code runs: a background thread sampling NVML (nvidia-ml-py).

with NvmlSampler("cuda") as s: ...            # s.result(): GPU memory (this process, device), power, energy,
                                               # torch peak allocated/reserved, CPU RSS; null + reason if absent
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from ..common.missing import NOT_MEASURED
from ..common.timing import current_rss_bytes, load_average, peak_rss_bytes

GPU_FIELDS = (
    "process_gpu_mem_peak_bytes",
    "device_mem_used_peak_bytes",
    "device_mem_total_bytes",
    "power_mean_w",
    "power_max_w",
    "energy_j",
    "torch_max_memory_allocated_bytes",
    "torch_max_memory_reserved_bytes",
)


def _nvml_handle(nvml, device: torch.device):
    """NVML handle of the CUDA device torch calls `device` (CUDA_VISIBLE_DEVICES may renumber devices)."""
    index = (
        device.index if device.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    )
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        for candidate in (uuid, f"GPU-{uuid}"):
            try:
                return nvml.nvmlDeviceGetHandleByUUID(candidate)
            except nvml.NVMLError:
                pass
    except (AttributeError, RuntimeError, AssertionError):
        pass
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return nvml.nvmlDeviceGetHandleByIndex(index)
    raise RuntimeError(f"cannot map cuda:{index} to an NVML device (CUDA_VISIBLE_DEVICES is set, UUID lookup failed)")


class NvmlSampler:
    """Samples memory and power in a background thread while the block runs; `result()` is a JSON-able dict.

    On a CUDA device with NVML: this process's GPU memory (nvmlDeviceGetComputeRunningProcesses, matched on
    os.getpid()), the device's used memory, power draw, and energy (the device's total-energy counter where the
    GPU has one, else power samples integrated by the trapezoid rule; "energy_source" says which). Power and
    energy are device-wide: other processes on the same GPU count too. Always: torch's peak allocated/reserved
    bytes (CUDA), and the CPU resident set size sampled over the block. Whatever cannot be had is null with
    the reason in result()["na"]; the sampler itself never raises for a missing GPU, driver or NVML.
    """

    def __init__(
        self, device: torch.device | str = "cpu", interval_s: float = 0.05, clock: Callable[[], float] = time.monotonic
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.clock = clock
        self._result: dict | None = None

    # -- lifecycle --
    def __enter__(self) -> NvmlSampler:
        self.na: dict[str, str] = {}
        self._nvml = self._handle = None
        self._proc_peak = self._dev_peak = self._dev_total = None
        self._power: list[tuple[float, float]] = []  # (time s, watts)
        self._pid_seen = False
        self._energy0 = self._energy_error = None
        self._rss_peak = None
        self._n = 0
        self._lock = threading.Lock()
        self._cuda = self.device.type == "cuda" and torch.cuda.is_available()
        if self.device.type != "cuda":
            for f in GPU_FIELDS:
                self.na[f] = f"measured on {self.device.type}: no GPU in use"
        else:
            if self._cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            else:
                for f in GPU_FIELDS[6:]:
                    self.na[f] = "no CUDA device available to torch (torch.cuda.is_available() is False)"
            self._start_nvml()
        self._load0 = load_average()
        self._t0 = self.clock()
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        self._stop.set()
        self._thread.join()
        self._sample()
        self._t1 = self.clock()
        self._result = self._finish()
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        return False

    def _start_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as e:  # no library, no driver, no permission: say which
            for f in GPU_FIELDS[:6]:
                self.na[f] = f"NVML unavailable ({type(e).__name__}: {e})"
            return
        self._nvml = pynvml
        try:
            self._handle = _nvml_handle(pynvml, self.device)
        except Exception as e:
            for f in GPU_FIELDS[:6]:
                self.na[f] = f"no NVML handle for {self.device} ({type(e).__name__}: {e})"
            return
        try:
            self._dev_total = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).total)
        except Exception as e:
            self.na["device_mem_total_bytes"] = f"nvmlDeviceGetMemoryInfo failed ({type(e).__name__}: {e})"
        try:
            self._energy0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # mJ since driver load
        except Exception as e:
            self._energy_error = f"{type(e).__name__}: {e}"

    # -- sampling --
    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _note(self, field: str, reason: str) -> None:
        self.na.setdefault(field, reason)

    def _sample(self) -> None:
        with self._lock:
            self._n += 1
            rss = current_rss_bytes()
            if rss is not None:
                self._rss_peak = rss if self._rss_peak is None else max(self._rss_peak, rss)
            if self._handle is None:
                return
            nv, h = self._nvml, self._handle
            try:
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
                    if p.pid == os.getpid():
                        self._pid_seen = True
                        used = getattr(p, "usedGpuMemory", None)
                        if used is None:
                            self._note("process_gpu_mem_peak_bytes", "NVML does not report per-process memory here")
                        else:
                            self._proc_peak = used if self._proc_peak is None else max(self._proc_peak, used)
            except Exception as e:
                self._note(
                    "process_gpu_mem_peak_bytes",
                    f"nvmlDeviceGetComputeRunningProcesses failed ({type(e).__name__}: {e})",
                )
            try:
                used = int(nv.nvmlDeviceGetMemoryInfo(h).used)
                self._dev_peak = used if self._dev_peak is None else max(self._dev_peak, used)
            except Exception as e:
                self._note("device_mem_used_peak_bytes", f"nvmlDeviceGetMemoryInfo failed ({type(e).__name__}: {e})")
            try:
                self._power.append((self.clock(), nv.nvmlDeviceGetPowerUsage(h) / 1000.0))  # mW -> W
            except Exception as e:
                self._note("power_mean_w", f"nvmlDeviceGetPowerUsage failed ({type(e).__name__}: {e})")

    # -- summary --
    def _finish(self) -> dict:
        na = self.na
        out: dict = {
            "device": str(self.device),
            "interval_s": self.interval_s,
            "duration_s": self._t1 - self._t0,
            "n_samples": self._n,
            "load_average_start": self._load0,
            "load_average_end": load_average(),
        }
        out["cpu_rss_peak_bytes"] = self._rss_peak
        if self._rss_peak is None:
            na["cpu_rss_peak_bytes"] = "no /proc/self/statm on this platform"
        out["cpu_maxrss_lifetime_bytes"] = peak_rss_bytes()
        out["process_gpu_mem_peak_bytes"] = self._proc_peak
        if self._handle is not None and self._proc_peak is None:
            self._note(
                "process_gpu_mem_peak_bytes",
                f"this process (pid {os.getpid()}) is not among NVML's compute "
                "processes on the device (e.g. a container with its own PID namespace)"
                if not self._pid_seen
                else "NVML reported no memory for this process",
            )
        out["device_mem_used_peak_bytes"] = self._dev_peak
        out["device_mem_total_bytes"] = self._dev_total
        watts = [w for _, w in self._power]
        out["power_mean_w"] = statistics.fmean(watts) if watts else None
        out["power_max_w"] = max(watts) if watts else None
        if self._handle is not None and not watts:
            self._note("power_mean_w", "no power sample")
        if out["power_max_w"] is None and "power_mean_w" in na:
            na.setdefault("power_max_w", na["power_mean_w"])
        out["energy_j"], out["energy_source"] = None, None
        if self._handle is not None:
            e1 = None
            if self._energy0 is not None:
                try:
                    e1 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
                except Exception as e:
                    self._energy_error = f"{type(e).__name__}: {e}"
            if e1 is not None:
                out["energy_j"] = (e1 - self._energy0) / 1000.0
                out["energy_source"] = "nvmlDeviceGetTotalEnergyConsumption (device-wide counter)"
            elif len(self._power) >= 2:
                t, w = np.array([p[0] for p in self._power]), np.array(watts)
                out["energy_j"] = float(np.sum((w[1:] + w[:-1]) / 2 * np.diff(t)))
                out["energy_source"] = (
                    f"integrated from power samples (device-wide, trapezoid rule, interval "
                    f"{self.interval_s} s; no energy counter: {self._energy_error})"
                )
            else:
                self._note("energy_j", "no energy counter and fewer than 2 power samples")
        if self._cuda:
            out["torch_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            out["torch_max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        else:
            out["torch_max_memory_allocated_bytes"] = out["torch_max_memory_reserved_bytes"] = None
        for f in GPU_FIELDS:
            if out[f] is not None:
                na.pop(f, None)
            else:
                na.setdefault(f, NOT_MEASURED)
        out["na"] = dict(sorted(na.items()))
        return out

    def result(self) -> dict:
        if self._result is None:
            raise RuntimeError("NvmlSampler.result() is available after the with-block ends")
        return self._result
