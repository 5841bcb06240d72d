from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError

CRITERIA = ("first-half", "similarity", "gradient")
POOLS = ("mean", "cls")


@dataclass
class AutoLearngeneConfig:
    """How ``auto-learngene`` chooses the ancestry layers it keeps.

    - ``first-half``: the first L_a // 2 blocks (the later papers' "auto-learngene"
      baseline: 6 of a 12-block DeiT). Reads no data; ``k`` is ignored.
    - ``similarity``: the ``k`` blocks whose outputs on a probe batch of the target data
      have the highest linear CKA with the label kernel ("Inheriting Condensed Knowledge", 2023).
    - ``gradient``: the ``k`` blocks whose gradients change least while the ancestry is
      fine-tuned on a short stream of tasks drawn from the data (Wang et al., AAAI 2022).

    ``layers`` and ``scores`` are outputs: extraction fills them in (and the saved config
    keeps them); they cannot be set by hand (use ``heuristic layers=[...]`` for that).
    """

    criterion: str = "first-half"  # "first-half" | "similarity" | "gradient"
    k: int = 3                     # blocks kept by "similarity" / "gradient" (first-half keeps L_a // 2)
    probe_size: int = 256          # similarity: images of `data` in the probe batch
    pool: str = "mean"             # similarity: token features per image, "mean" of patch tokens or "cls" token
    num_tasks: int = 3             # gradient: tasks in the stream (random class subsets, fresh head each)
    task_classes: int = 5          # gradient: classes per task (capped at the classes the data has)
    grad_steps: int = 20           # gradient: optimisation steps per task
    batch_size: int = 32           # gradient: images per step
    lr: float = 0.01               # gradient: SGD (momentum 0.9) learning rate of the fine-tuning stream
    seed: int = 0                  # probe / task / batch sampling and task-head init
    device: str = "auto"           # "auto" (CUDA if available), "cpu", "cuda:0", ... (data criteria only)
    layers: list[int] | None = None     # output: chosen ancestry layers, ascending
    scores: list[float] | None = None   # output: the criterion's score of every ancestry layer

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ConfigError(f"auto-learngene criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.pool not in POOLS:
            raise ConfigError(f"auto-learngene pool must be one of {POOLS}, got {self.pool!r}")
        for name, minimum in (("k", 1), ("probe_size", 2), ("num_tasks", 1), ("task_classes", 2),
                              ("grad_steps", 2), ("batch_size", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"auto-learngene {name} must be an integer >= {minimum}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"auto-learngene lr must be a positive number, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"auto-learngene seed must be an integer, got {self.seed!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"auto-learngene device must be 'auto' or a torch device string such as 'cpu', got {self.device!r}")
        if self.layers is not None:
            if not isinstance(self.layers, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layers):
                raise ConfigError(f"auto-learngene layers must be a list of layer indices >= 0, got {self.layers!r}")
            self.layers = list(self.layers)
        if self.scores is not None:
            if not isinstance(self.scores, (list, tuple)) or not all(
                    isinstance(s, (int, float)) and not isinstance(s, bool) for s in self.scores):
                raise ConfigError(f"auto-learngene scores must be a list of numbers, got {self.scores!r}")
            self.scores = [float(s) for s in self.scores]

    @property
    def needs_data(self) -> bool:
        return self.criterion != "first-half"
