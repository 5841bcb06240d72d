from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .._checks import check_distillation, check_training, is_int

DISTRIBUTIONS = ("gaussian", "softmax", "uniform")
RESAMPLE = ("epoch", "once")
MAP_FORMS = ("split", "paper")

# The paper's shapes (Wang et al., ICML 2024, Sec. 5 and the reference configs), and vit-mini.
# H_a / H_b / H_d: heads per layer of the ancestry / learngene / descendant; L_a / L_b: layers.
PAPER_SHAPES: dict[str, dict[str, int]] = {
    "deit-tiny": dict(ancestry_heads=3, learngene_heads=2, descendant_heads=3, ancestry_layers=12,
                      learngene_layers=6),
    "deit-small": dict(ancestry_heads=6, learngene_heads=4, descendant_heads=6, ancestry_layers=12,
                       learngene_layers=6),
    "deit-base": dict(ancestry_heads=12, learngene_heads=8, descendant_heads=12, ancestry_layers=12,
                      learngene_layers=6),
    "vit-mini": dict(ancestry_heads=6, learngene_heads=4, descendant_heads=6, ancestry_layers=12,
                     learngene_layers=6),
}


def default_learngene_heads(ancestry_heads: int) -> int:
    """H_b = round(2 H_a / 3), at least 1: the paper's 3 -> 2, 6 -> 4, 12 -> 8."""
    return max(1, round(2 * ancestry_heads / 3))


def default_learngene_layers(ancestry_layers: int) -> int:
    """L_b = L_a / 2 (floor), at least 1: the paper's 12 -> 6."""
    return max(1, ancestry_layers // 2)


def preset_options(preset: str) -> dict[str, int]:
    """The extraction options of a paper shape: ``{"learngene_heads": H_b, "learngene_layers": L_b}``."""
    if preset not in PAPER_SHAPES:
        raise ConfigError(f"unknown PEG shape {preset!r}; choose one of: {', '.join(PAPER_SHAPES)}")
    shape = PAPER_SHAPES[preset]
    return {"learngene_heads": shape["learngene_heads"], "learngene_layers": shape["learngene_layers"]}


@dataclass
class PegConfig:
    """How the PEG learngene is sampled from the ancestry and condensed.

    Paper (Wang et al., ICML 2024, Algorithm 1): each epoch, mixture weights p ~ N(0, I)
    combine the ancestry's H_a heads of a layer into H_b learngene heads, and its L_a FFNs
    into L_b learngene FFNs. Reference code (BruceQFWang/ICML2024-PEG): p = softmax(randn)
    ("Gaussian-Layer") or 1/n ("Uniform"), drawn once when the model is built, and the
    mixed model trained for 100 ImageNet epochs. Both are reachable here. The training
    defaults are the library's small-ViT defaults (as for tleg), not DeiT's recipe.

    Default mixture law: the reference's softmax, not the paper's raw N(0, 1). In the
    ``ablate`` suite (benchmarks/results/ablate.md: mini's ancestry, 2 condensing epochs,
    mnist-5k and digits, depths 2/6/12, 3 seeds) the raw draws, condensed, fine-tune to
    70.8-86.4% where softmax draws reach 83.0-92.9% (6.5-19.0 points more in every cell), and
    condensing raw draws ends below not condensing them at all in 5 of 6 cells (78.5-85.1%): a sum of raw N(0, 1)-weighted FFNs and heads starts
    several times the ancestry's scale and each epoch's fresh draw moves it again.
    """

    learngene_heads: int | None = None  # H_b heads per layer; None = round(2 H_a / 3) (paper: 3->2, 6->4, 12->8)
    learngene_layers: int | None = None  # L_b layers (FFNs); None = L_a // 2 (paper: 12 -> 6)
    distribution: str = "softmax"       # "softmax" softmax(N(0,1)) (reference; default, see below), "gaussian" N(0,1)
    #                                     (paper), "uniform" 1/n
    resample: str = "epoch"             # "epoch": fresh weights each condensing epoch (paper); "once": one draw (reference)
    map_form: str = "split"             # "split": hidden 2n, starts as exact interpolation (ours); "paper": hidden n, random
    epochs: int = 10                    # condensing (distillation) epochs; 0 = one draw of the mixture, no data needed
    batch_size: int = 128               # global batch of the distillation run
    lr: float = 1e-3                    # AdamW peak lr (warmup then cosine, learngene.train's schedule)
    weight_decay: float = 0.05          # AdamW decay on Linear/conv weight matrices only (never on the maps)
    warmup_epochs: float = 1.0          # linear warmup length in epochs
    distill_alpha: float = 1.0          # loss = (1 - alpha) CE(labels) + alpha KD(ancestry); pure soft KD by default
    distill_tau: float = 1.0            # softmax temperature of the KD term
    seed: int = 0                       # seeds the mixture draws, the maps' initialisation and the training run
    holdout: float = 0.0                # fraction of `data` held out to report the auxiliary model's eval accuracy
    device: str = "auto"                # where condensing runs: "auto" (CUDA if available), "cpu", "cuda:0"...

    @property
    def needs_data(self) -> bool:
        """Condensing distils the ancestry on data; a single draw (epochs=0) reads none."""
        return self.epochs > 0

    def __post_init__(self) -> None:
        for name in ("learngene_heads", "learngene_layers"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ConfigError(f"peg {name} must be an integer >= 1 (or null: the paper's default), got {value!r}")
        for name, choices in (("distribution", DISTRIBUTIONS), ("resample", RESAMPLE), ("map_form", MAP_FORMS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"peg {name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        check_training("peg", self)
        check_distillation("peg", self)
