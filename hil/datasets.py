"""Data sets as input voltages and target voltages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    inputs: np.ndarray  # [samples, inputs], V
    targets: np.ndarray  # [samples, outputs], V
    target_levels: tuple[float, float]  # (false, true) output levels, V

    def __len__(self) -> int:
        return len(self.inputs)

    def correct(self, y: np.ndarray, index: int) -> bool:
        """A sample is right when every output is nearer its own target level than the other."""
        half = abs(self.target_levels[1] - self.target_levels[0]) / 2
        return bool(np.all(np.abs(np.asarray(y) - self.targets[index]) < half))


def xor(
    input_low: float = -2.0, input_high: float = 2.0, target_low: float = 0.0, target_high: float = 1.0
) -> Dataset:
    """XOR rows in the seed's order (0,0), (0,1), (1,0), (1,1); bit b maps to low + b·(high − low)."""
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    out = np.array([[0], [1], [1], [0]], dtype=float)
    return Dataset(
        "xor",
        input_low + bits * (input_high - input_low),
        target_low + out * (target_high - target_low),
        (target_low, target_high),
    )


def case1(
    input_low: float = -2.0, input_high: float = 2.0, target_low: float = 0.0, target_high: float = 1.0
) -> Dataset:
    """Case 1 of the 2023 paper: one sample, V0 = input_low and V1 = input_high (−2 V, 2 V), target
    target_high (1 V); target_low only sets the level a wrong answer is judged against."""
    return Dataset(
        "case1",
        np.array([[input_low, input_high]], dtype=float),
        np.array([[target_high]], dtype=float),
        (target_low, target_high),
    )


DATASETS = {"xor": xor, "case1": case1}
