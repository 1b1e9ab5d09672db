"""The probe: weight fluctuations, noise structure and the IVFR of any PyTorch model.

docs/theory.md §11. Needs the ``probe`` extra (torch and scikit-learn). Only the command line
(``sgdfluct probe``) and the claim-8 measurement import this package.
"""

from __future__ import annotations

from ._builtin import build_model, load_data, run_probe, run_probe_config
from ._config import ProbeConfig, load_probe_config, probe_config_from_dict
from ._core import FluctuationProbe, LayerResult, ProbeRun
from ._spectrum import HessianSpectrum, SpectrumSettings
from ._stream import NystromSketch, PlateauMonitor, plateau_test

__all__ = [
    "FluctuationProbe",
    "HessianSpectrum",
    "LayerResult",
    "NystromSketch",
    "PlateauMonitor",
    "ProbeConfig",
    "ProbeRun",
    "SpectrumSettings",
    "build_model",
    "load_data",
    "load_probe_config",
    "plateau_test",
    "probe_config_from_dict",
    "run_probe",
    "run_probe_config",
]
