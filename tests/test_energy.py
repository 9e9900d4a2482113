"""Energy meters through the real Zeus and CodeCarbon code.

Fakes only where no real part runs here: RAPL is a temporary powercap sysfs tree (the files the kernel exposes),
NVML is the official `pynvml` binding with its device functions patched (the smallest seam under Zeus).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from specsweep.energy import EnergyReading, energy_section, make_meter
from specsweep.energy.config import EnergyConfig
from specsweep.session import Session

MAX_UJ = 262143328850  # a real package max_energy_range_uj


def write_counter(path: Path, uj: float) -> None:
    """Replace energy_uj atomically, as sysfs does: a reader never sees a half-written number."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{int(uj)}\n")
    os.replace(tmp, path)


def wait_until_read(path: Path, timeout_s: float = 30.0) -> None:
    """Block until another process reads `path` (its access time passes its modification time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = os.stat(path)
        if st.st_atime_ns > st.st_mtime_ns:
            return
        time.sleep(0.02)
    pytest.skip(f"no read of {path} seen in {timeout_s:.0f} s (filesystem without access times?)")


class FakeRapl:
    """A powercap tree: intel-rapl:0 (package-0) and, optionally, its intel-rapl:0:0 (dram) subzone."""

    def __init__(self, root: Path, package_uj: float = 1e9, dram_uj: float | None = 5e8, max_uj: int = MAX_UJ):
        self.root = root
        self.package = root / "intel-rapl:0"
        self.package.mkdir(parents=True)
        self._zone(self.package, "package-0", package_uj, max_uj)
        self.dram = None
        if dram_uj is not None:
            self.dram = self.package / "intel-rapl:0:0"
            self.dram.mkdir()
            self._zone(self.dram, "dram", dram_uj, max_uj)

    @staticmethod
    def _zone(path: Path, name: str, uj: float, max_uj: int) -> None:
        (path / "name").write_text(name + "\n")
        (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
        write_counter(path / "energy_uj", uj)

    def read(self, zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    def add(self, zone: Path, joules: float) -> None:
        write_counter(zone / "energy_uj", self.read(zone) + joules * 1e6)

    def draw(self, package_w: float, dram_w: float = 0.0, period_s: float = 0.002):
        """Advance the counters as a constant power draw would, until the returned stop() is called."""
        stop = threading.Event()
        start = {z: self.read(z) for z in (self.package, self.dram) if z is not None}
        watts = {self.package: package_w, self.dram: dram_w}
        t0 = time.perf_counter()

        def run():
            while not stop.is_set():
                elapsed = time.perf_counter() - t0
                for zone, uj in start.items():
                    write_counter(zone / "energy_uj", uj + watts[zone] * elapsed * 1e6)
                time.sleep(period_s)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def stopper():
            stop.set()
            thread.join()

        return stopper


@pytest.fixture
def fresh_zeus():
    """Zeus keeps process-wide singletons (GPUs, CPUs, availability caches): start and end each test clean."""
    import zeus.device.cpu as zcpu
    import zeus.device.cpu.rapl as rapl
    import zeus.device.gpu as zgpu
    from zeus.device.gpu.nvidia import nvml_is_available

    def reset():
        zcpu._cpus = None
        zgpu._gpus = None
        rapl.rapl_is_available.cache_clear()
        nvml_is_available.cache_clear()

    default = rapl.RAPL_DIR
    reset()
    yield
    rapl.RAPL_DIR = default
    reset()


def counters_here() -> bool:
    from zeus.device.gpu import amdsmi_is_available, nvml_is_available

    return Path("/sys/class/powercap/intel-rapl").exists() or nvml_is_available() or amdsmi_is_available()


# --- RAPL: real Zeus against a fake powercap tree -------------------------------------------------------------


def test_rapl_counter_deltas_become_joules_per_device(tmp_path, fresh_zeus):
    rapl = FakeRapl(tmp_path / "powercap")
    meter = make_meter(EnergyConfig(meter="zeus", rapl_dir=str(rapl.root), gpu_indices=[]), Session())
    assert meter.source == "zeus-rapl"
    meter.begin("w")
    rapl.add(rapl.package, 3.0)
    rapl.add(rapl.dram, 1.0)
    reading = meter.end("w")
    meter.close()
    assert reading.joules == pytest.approx(4.0)
    assert reading.per_device == pytest.approx({"cpu": 3.0, "dram": 1.0})
    assert reading.unavailable_reason is None and not reading.estimated
    assert meter.context["not_measured"] == {"gpu": "off (energy.gpu_indices=[])"}


def test_rapl_without_dram_zone_says_dram_is_unmeasured(tmp_path, fresh_zeus):
    rapl = FakeRapl(tmp_path / "powercap", dram_uj=None)
    meter = make_meter(EnergyConfig(meter="zeus", rapl_dir=str(rapl.root), gpu_indices=[]), Session())
    meter.begin("w")
    rapl.add(rapl.package, 2.5)
    reading = meter.end("w")
    assert reading.per_device == pytest.approx({"cpu": 2.5})
    assert "dram" in meter.context["not_measured"]


def test_rapl_counter_wraparound_is_counted_by_zeus(tmp_path, fresh_zeus):
    # Start within 100 J of the counter's maximum, so Zeus' wrap-around tracker polls every 0.1 s.
    rapl = FakeRapl(tmp_path / "powercap", package_uj=MAX_UJ - 50e6, dram_uj=None)
    meter = make_meter(EnergyConfig(meter="zeus", rapl_dir=str(rapl.root), gpu_indices=[]), Session())
    meter.begin("w")
    counter = rapl.package / "energy_uj"
    write_counter(counter, MAX_UJ - 1e6)  # +49 J
    wait_until_read(counter)  # Zeus' tracker process has seen the value before the wrap
    write_counter(counter, 2e6)  # wrapped: +1 J to the top, +2 J after it
    wait_until_read(counter)  # ... and the wrapped one
    reading = meter.end("w")
    assert reading.joules == pytest.approx(52.0, abs=1e-6)


def test_idle_baseline_is_measured_cached_and_subtracted(tmp_path, fresh_zeus):
    session = Session()
    rapl = FakeRapl(tmp_path / "powercap", dram_uj=None)
    cfg = EnergyConfig(meter="zeus", rapl_dir=str(rapl.root), gpu_indices=[], idle_seconds=0.5)
    stop = rapl.draw(package_w=20.0)
    try:
        meter = make_meter(cfg, session)
    finally:
        stop()
    idle = meter.context["idle"]
    assert idle["watts"]["cpu"] == pytest.approx(20.0, rel=0.15)
    assert idle["source"].startswith("measured")
    assert make_meter(cfg, session).context["idle"]["source"].startswith("cached")
    assert make_meter(cfg, Session()).context["idle"]["source"].startswith("measured")  # a new process measures again

    meter.begin("w")
    time.sleep(0.2)
    rapl.add(rapl.package, 10.0)
    reading = meter.end("w")
    spec = SimpleNamespace(energy=[reading], output_tokens=lambda: 10)
    section = energy_section(spec, None, accepted=5)
    corrected = section.idle_corrected
    assert section.joules == pytest.approx(10.0)
    assert corrected.joules == pytest.approx(10.0 - idle["watts"]["cpu"] * reading.seconds)
    assert corrected.joules_per_token == pytest.approx(corrected.joules / 10)
    assert corrected.joules_per_accepted_token == pytest.approx(corrected.joules / 5)


# --- NVML: real Zeus over the official pynvml binding, device calls patched -----------------------------------


class FakeNvml:
    """One Volta-or-newer GPU whose total-energy counter (mJ) and instant power (mW) the test sets."""

    def __init__(self, monkeypatch, energy_mj: int = 10_000_000, power_mw: int = 250_000):
        import pynvml

        self.energy_mj, self.power_mw = energy_mj, power_mw

        def not_supported(*_):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

        def field_values(handle, fields):
            return [
                SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, value=SimpleNamespace(uiVal=self.power_mw))
                for _ in fields
            ]

        patches = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: 1,
            "nvmlDeviceGetHandleByIndex": lambda i: f"gpu{i}",
            "nvmlDeviceGetName": lambda h: "Fake GPU",
            "nvmlDeviceGetC2cModeInfoV": not_supported,
            "nvmlDeviceGetArchitecture": lambda h: pynvml.NVML_DEVICE_ARCH_AMPERE,
            "nvmlDeviceGetTotalEnergyConsumption": lambda h: self.energy_mj,
            "nvmlDeviceGetFieldValues": field_values,
        }
        for name, fn in patches.items():
            monkeypatch.setattr(pynvml, name, fn)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.delenv("ZEUSD_SOCK_PATH", raising=False)


def test_nvml_energy_counter_becomes_gpu_joules(monkeypatch, fresh_zeus):
    gpu = FakeNvml(monkeypatch)
    meter = make_meter(EnergyConfig(meter="zeus", cpu_indices=[]), Session())
    assert meter.source == "zeus-nvml"
    assert meter.context["counter_update_s"] == 0.1
    meter.begin("w")
    gpu.energy_mj += 1500
    reading = meter.end("w")
    assert reading.joules == pytest.approx(1.5)
    assert reading.per_device == {"gpu": pytest.approx(1.5)}


def test_nvml_short_window_uses_approx_instant_energy(monkeypatch, fresh_zeus):
    FakeNvml(monkeypatch, power_mw=200_000)
    meter = make_meter(EnergyConfig(meter="zeus", cpu_indices=[], approx_instant_energy=True), Session())
    meter.begin("w")
    time.sleep(0.02)  # the counter does not advance: shorter than NVML's update period
    reading = meter.end("w")
    assert reading.joules == pytest.approx(200.0 * reading.seconds, rel=0.2)
    assert meter.context["short_window_handling"].startswith("approx_instant_energy")
    spec = SimpleNamespace(energy=[reading], output_tokens=lambda: 4)
    assert energy_section(spec, None, None).windows.shorter_than_update == 1


def test_nvml_short_window_without_approximation_is_unavailable_not_zero(monkeypatch, fresh_zeus):
    FakeNvml(monkeypatch)
    meter = make_meter(EnergyConfig(meter="zeus", cpu_indices=[], approx_instant_energy=False), Session())
    meter.begin("w")
    with pytest.warns(UserWarning):  # Zeus' own warning about a zero reading
        reading = meter.end("w")
    assert reading.joules is None
    assert "energy.approx_instant_energy=true" in reading.unavailable_reason


# --- nothing to measure here; CodeCarbon's estimate ------------------------------------------------------------


def test_zeus_on_this_machine_reads_its_counter_or_says_why_not(fresh_zeus):
    """Both kinds of machine: with a counter (NVML, RAPL, AMD SMI) a window reads joules from it; without one the
    reading is null and names what was looked for."""
    meter = make_meter(EnergyConfig(meter="zeus"), Session())
    meter.begin("w")
    time.sleep(0.2)
    reading = meter.end("w")
    spec = SimpleNamespace(energy=[reading], output_tokens=lambda: 8)
    section = energy_section(spec, spec, accepted=3)
    if counters_here():
        assert reading.joules is not None and reading.joules >= 0 and reading.unavailable_reason is None
        assert reading.per_device and meter.source.startswith("zeus-")
        assert section.joules_per_token == pytest.approx(reading.joules / 8) and section.unavailable_reason is None
        return
    assert reading.joules is None and reading.per_device == {}
    assert "NVML" in reading.unavailable_reason and "RAPL" in reading.unavailable_reason
    assert section.joules is None and section.joules_per_token is None and section.energy_ratio is None
    assert section.unavailable_reason == reading.unavailable_reason


def test_codecarbon_is_a_labelled_estimate():
    meter = make_meter(EnergyConfig(meter="codecarbon"), Session())
    meter.begin("w")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        pass
    reading = meter.end("w")
    meter.close()
    assert reading.estimated and reading.source == "codecarbon-estimate"
    assert reading.joules > 0 and set(reading.per_device) >= {"cpu", "dram"}
    assert "estimate" in meter.context["estimate"].lower()


# --- the result section and the config checks ------------------------------------------------------------------


def test_section_pairs_spec_with_baseline_and_never_reports_unknown_as_zero():
    ctx = {"counter_update_s": 0.1, "short_window_handling": "approx", "not_measured": {}}
    spec = SimpleNamespace(
        energy=[EnergyReading(6.0, 0.5, {"gpu": 5.0, "cpu": 1.0}, "zeus-nvml+rapl", context=ctx)] * 2,
        output_tokens=lambda: 24,
    )
    base = SimpleNamespace(
        energy=[EnergyReading(8.0, 0.05, {"gpu": 8.0}, "zeus-nvml+rapl", context=ctx)], output_tokens=lambda: 16
    )
    s = energy_section(spec, base, accepted=6)
    assert s.joules == 12.0 and s.per_device == {"gpu": 10.0, "cpu": 2.0}
    assert s.joules_per_token == 0.5 and s.joules_per_accepted_token == 2.0
    assert s.baseline_joules == 8.0 and s.energy_ratio == pytest.approx(0.5 / 0.5)
    assert s.baseline_windows.shorter_than_update == 1
    assert s.idle_corrected.joules is None and "idle_seconds=0" in s.idle_corrected.unavailable_reason

    partial = SimpleNamespace(
        energy=[spec.energy[0], EnergyReading(None, 0.5, unavailable_reason="counter lost")], output_tokens=lambda: 24
    )
    p = energy_section(partial, None, accepted=None)
    assert p.joules is None and p.unavailable_reason == "1 of 2 windows unmeasured: counter lost"
    assert p.joules_per_accepted_token is None and p.joules_per_accepted_token_reason


@pytest.mark.parametrize(
    "overrides, field, allowed",
    [
        (["energy.meter=joulemeter"], "energy.meter", "one of none, zeus, codecarbon"),
        (["energy=zeus", "energy.gpu_indices=[-1]"], "energy.gpu_indices", "integers >= 0"),
        (["energy=zeus", "energy.rapl_dir=/no/such/powercap"], "energy.rapl_dir", "existing powercap directory"),
        (["energy=codecarbon", "energy.tracking_mode=cluster"], "energy.tracking_mode", "one of process, machine"),
        (["energy=zeus", "energy.idle_seconds=-1"], "energy.idle_seconds", "a number >= 0"),
        (["energy=none", "energy.idle_seconds=5"], "energy.idle_seconds", "0 when energy.meter=none"),
    ],
)
def test_invalid_energy_config_names_field_value_and_allowed(overrides, field, allowed):
    from specsweep.config.compose import compose_config
    from specsweep.config.validate import ConfigError, validate

    with pytest.raises(ConfigError) as info:
        validate(compose_config(overrides))
    assert info.value.field == field and allowed in str(info.value) and "\n" not in str(info.value)
