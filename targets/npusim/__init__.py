"""Simulated NPUs: accelerator descriptions (TOML presets), per-layer cost models, arena planning, energy,
CPU fallback and the reports of ``lowbit simulate`` (docs/simulator.md).

    from lowbit.targets.npusim import load_accelerator, simulate
    report = simulate(artifact, load_accelerator("ethos-u55-128"))
    print(report.table())
"""
from lowbit.targets.npusim.config import Accelerator, load_accelerator, presets
from lowbit.targets.npusim.simulate import SimReport, simulate, simulate_layers
from lowbit.targets.npusim.sweep import sweep

__all__ = ["Accelerator", "SimReport", "load_accelerator", "presets", "simulate", "simulate_layers", "sweep"]
