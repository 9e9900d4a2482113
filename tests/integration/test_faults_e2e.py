"""A fault in the middle of a real measurement on a tiny model: an energy meter that fails to close keeps the
measurement. The faults that need no model are in tests/test_faults.py."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # its tiny model borrows the packaged tokenizer, so it needs the converted 0.5B
def test_a_meter_that_fails_to_close_keeps_the_measurement(tiny_model_dir, monkeypatch):
    from specsweep import app, energy
    from specsweep.config.compose import compose_config
    from specsweep.config.validate import validate
    from specsweep.session import Session

    class FailingClose(energy.NoEnergyMeter):
        def close(self) -> None:
            raise OSError("powercap counter vanished")

    monkeypatch.setattr(energy, "make_meter", lambda cfg, session: FailingClose())
    cfg = compose_config(
        [
            "backend=pytorch",
            "speculation=ngram",
            f"model.target={tiny_model_dir}",
            "model.draft=null",
            "model.name=tiny",
            "backend.dtype=float32",
            "dataset.num_prompts=1",
            "generation.max_new_tokens=8",
            "measurement.repetitions=1",
        ]
    )
    session = Session()
    sections = app.measure(cfg, validate(cfg, session), session)
    assert sections.metrics.tokens_per_s > 0 and sections.lossless.checked
    assert sections.energy.meter_error == "OSError: powercap counter vanished"
    session.close()
