"""Shared fixtures for the synthetic-dataset tests: one tiny generation per session."""

from __future__ import annotations

import json

import pytest

from vdial.synth import SynthSummary, generate


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """The tiny dataset, seed 0, written once and only read by the tests."""
    return generate(tmp_path_factory.mktemp("synth") / "tiny", size="tiny", seed=0, progress=False)


@pytest.fixture(scope="session")
def truth(tiny: SynthSummary) -> dict:
    """The ground truth file of the tiny dataset."""
    return json.loads(tiny.synth_json.read_text())
