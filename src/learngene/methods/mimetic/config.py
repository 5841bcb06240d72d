from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ...errors import ConfigError


@dataclass
class MimeticConfig:
    """Targets of mimetic initialisation (Trockman & Kolter, ICML 2023).

    W_q W_k^T ~ alpha1 * Z1 + beta1 * I  and  W_v W_proj ~ alpha2 * Z2 - beta2 * I,
    Z ~ N(0, 1/D). Defaults are the paper's values for its ViTs.
    """

    alpha1: float = 0.7  # weight of the random part of W_q W_k^T
    beta1: float = 0.7   # weight of the identity in W_q W_k^T (attend to similar tokens)
    alpha2: float = 0.4  # weight of the random part of W_v W_proj
    beta2: float = 0.4   # weight of the negative identity in W_v W_proj

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"mimetic {f.name} must be a finite number >= 0 (the paper uses values in [0, 1]), "
                                  f"got {value!r}")
            setattr(self, f.name, float(value))
