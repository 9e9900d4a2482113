"""The few accelerator calls the PyTorch backend makes, behind one seam.

On CUDA, GPU work is queued: a timer read right after `generate()` returns can stop before the device has finished,
so every timing and energy window edge waits for the device; memory is read from the caching allocator per device
(process RSS says nothing about GPU memory). On the CPU there is nothing to wait for and memory is the process's.
`Cuda` takes the `torch.cuda` module as `api`, so tests without a GPU drive the same code with a stand-in that has
torch.cuda's interface.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class Accelerator:
    """The CPU: generate() has finished its work when it returns; memory is read by the base Backend (process RSS)."""

    def __init__(self, device: str):
        self.device = device

    def synchronize(self) -> None:
        """Wait until the device has finished queued work (nothing is queued on the CPU)."""

    def reset_peak_memory(self) -> None:
        """Start the peak-memory window (the CPU's peak RSS cannot be reset)."""

    def peak_memory(self) -> Optional[Dict[str, Any]]:
        """Per-device peak since reset_peak_memory(), or None where the process's RSS is the answer."""
        return None

    def describe(self) -> Dict[str, Any]:
        return {"cuda_device": None, "cuda_driver": None, "cuda_runtime": None}


class Cuda(Accelerator):
    """An NVIDIA GPU through torch.cuda (or a stand-in with its interface)."""

    def __init__(self, device: str, api: Any = None):
        super().__init__(device)
        if api is None:
            import torch

            api = torch.cuda
        self.api = api
        self.index = int(device.split(":")[1]) if ":" in device else 0

    def synchronize(self) -> None:
        self.api.synchronize(self.index)

    def reset_peak_memory(self) -> None:
        for i in range(self.api.device_count()):  # reset_peak_memory_stats() alone resets only the current device
            self.api.reset_peak_memory_stats(i)

    def peak_memory(self) -> Dict[str, Any]:
        per_device = {f"cuda:{i}": self.api.max_memory_allocated(i) / 2**20 for i in range(self.api.device_count())}
        return {
            "peak_memory_mb": max(per_device.values()),
            "peak_memory_source": "torch.cuda.max_memory_allocated per device since this engine loaded",
            "peak_memory_per_device_mb": per_device,
        }

    def describe(self) -> Dict[str, Any]:
        import torch

        return {
            "cuda_device": self.api.get_device_name(self.index),
            "cuda_driver": nvidia_driver(),
            "cuda_runtime": torch.version.cuda,
        }


def accelerator_for(device: str) -> Accelerator:
    return Cuda(device) if device.startswith("cuda") else Accelerator(device)


def nvidia_driver() -> Optional[str]:
    """The NVIDIA driver version through NVML (nvidia-ml-py), or None where NVML is not there."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no NVML library or no driver: the environment says None
        return None
