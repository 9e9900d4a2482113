"""The PyTorch backend's CUDA paths, driven on the CPU up to the device call.

A real engine generates on the CPU with a tiny model; its accelerator seam (`backends/pytorch/device.py`) is the real
`Cuda` class given a stand-in for the `torch.cuda` module (no GPU here) that has torch.cuda's interface, records the
calls, and can take time in synchronize() the way a GPU finishing queued work does. What cannot run here: the device
calls themselves (docs/gpu.md says what has run on real hardware).
"""

from __future__ import annotations

import time

import pytest
from rich.progress import Progress

from conftest import build_engine
from specsweep.backends.pytorch.device import Accelerator, Cuda, accelerator_for
from specsweep.config.compose import compose_config
from specsweep.core import Prompt
from specsweep.energy import NoEnergyMeter
from specsweep.measure import phases

GIB = 2**30


class CudaStandIn:
    """torch.cuda's interface for the calls the backend makes: two devices, recorded calls, a settable drain time."""

    def __init__(self, calls: list):
        self.calls = calls
        self.drain_s = 0.0
        self.peak_bytes = {0: 3 * GIB, 1: 1 * GIB}

    def synchronize(self, device=None) -> None:
        self.calls.append(("synchronize", device))
        time.sleep(self.drain_s)

    def device_count(self) -> int:
        return len(self.peak_bytes)

    def reset_peak_memory_stats(self, device=None) -> None:
        self.calls.append(("reset_peak_memory_stats", device))

    def max_memory_allocated(self, device=None) -> int:
        return self.peak_bytes[device]

    def get_device_name(self, device=None) -> str:
        return "NVIDIA H100 80GB HBM3"


class RecordingMeter(NoEnergyMeter):
    def __init__(self, calls: list):
        super().__init__()
        self.calls = calls

    def begin(self, key):
        self.calls.append(("meter.begin", key))
        return super().begin(key)

    def end(self, key):
        self.calls.append(("meter.end", key))
        return super().end(key)


PROMPTS = [Prompt("p1", "code", "def add(a, b):"), Prompt("p2", "chat", "Say hi.")]


@pytest.fixture
def cuda_engine(tiny_model_dir):
    cfg = compose_config(
        [
            "backend=pytorch",
            f"model.target={tiny_model_dir}",
            f"model.draft={tiny_model_dir}",
            "speculation=ngram",
            "generation.max_new_tokens=8",
            "measurement.warmup=0",
            "measurement.repetitions=1",
            "energy=none",
            "logger=none",
        ]
    )
    engine = build_engine(cfg)
    calls: list = []
    api = CudaStandIn(calls)
    engine.accelerator = Cuda("cuda:1", api=api)
    return cfg, engine, api, calls


@pytest.mark.slow  # the tiny model borrows the packaged tokenizer, so it needs the converted 0.5B
def test_every_timing_and_energy_window_edge_waits_for_the_device(cuda_engine):
    cfg, engine, _api, calls = cuda_engine
    with Progress(disable=True) as progress:
        phases.measure_phase(engine, PROMPTS, cfg, RecordingMeter(calls), "speculative", progress)
    window = [  # one window per prompt (batch size 1)
        ("synchronize", 1),  # the energy window opens on an idle device
        ("meter.begin", "speculative"),
        ("synchronize", 1),  # generate(): before its timer starts
        ("synchronize", 1),  # and before it stops
        ("synchronize", 1),  # the energy window closes when the device has finished
        ("meter.end", "speculative"),
    ]
    assert calls == window * len(PROMPTS)


@pytest.mark.slow
def test_queued_device_work_is_inside_the_timed_window(cuda_engine):
    _cfg, engine, api, _calls = cuda_engine
    quick = engine.generate(PROMPTS[:1])[0].wall_s
    api.drain_s = 0.3  # each synchronize() now waits like a device finishing 0.3 s of queued work
    drained = engine.generate(PROMPTS[:1])[0].wall_s
    # the closing wait is timed (the opening one precedes the timer): one drain, not zero and not two
    assert 0.25 < drained - quick < 0.55


@pytest.mark.slow
def test_peak_memory_comes_from_the_allocator_per_device_and_is_reset_on_every_device(cuda_engine):
    _cfg, engine, api, calls = cuda_engine
    engine.load()  # models come from the session; the peak window restarts on every device
    assert [c for c in calls if c[0] == "reset_peak_memory_stats"] == [
        ("reset_peak_memory_stats", 0),
        ("reset_peak_memory_stats", 1),
    ]
    peak = engine.peak_memory()
    assert peak["peak_memory_per_device_mb"] == {"cuda:0": 3072.0, "cuda:1": 1024.0}
    assert peak["peak_memory_mb"] == 3072.0 and "max_memory_allocated" in peak["peak_memory_source"]


@pytest.mark.slow
def test_environment_names_the_cuda_device_and_the_nvml_driver(cuda_engine, monkeypatch):
    import pynvml

    _cfg, engine, _api, _calls = cuda_engine
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "580.95.05")
    env = engine.environment()
    assert env["cuda_device"] == "NVIDIA H100 80GB HBM3" and env["cuda_driver"] == "580.95.05"


def test_the_cpu_has_no_device_seam_to_wait_on_and_cuda_indices_are_parsed():
    assert type(accelerator_for("cpu")) is Accelerator and accelerator_for("cpu").peak_memory() is None
    assert Cuda("cuda:3", api=CudaStandIn([])).index == 3 and Cuda("cuda", api=CudaStandIn([])).index == 0
