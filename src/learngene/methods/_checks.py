"""Validation shared by the method configs that train (tleg, peg, learngene-pool, sn-net...).

Each raises ``ConfigError`` naming the method, the field and what is allowed.
"""

from __future__ import annotations

import math

from ..errors import ConfigError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_num(value) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_training(method: str, config, *, min_epochs: int = 0) -> None:
    """epochs (>= min_epochs; 0 = untrained), batch_size, seed, lr, weight_decay, warmup_epochs, device;
    the float fields become floats (JSON/YAML may give ints)."""
    if not is_int(config.epochs) or config.epochs < min_epochs:
        hint = " (0 = no training)" if min_epochs == 0 else ""
        raise ConfigError(f"{method} epochs must be an integer >= {min_epochs}{hint}, got {config.epochs!r}")
    if not is_int(config.batch_size) or config.batch_size < 1:
        raise ConfigError(f"{method} batch_size must be an integer >= 1, got {config.batch_size!r}")
    if not is_int(config.seed) or config.seed < 0:
        raise ConfigError(f"{method} seed must be an integer >= 0, got {config.seed!r}")
    if not is_num(config.lr) or config.lr <= 0:
        raise ConfigError(f"{method} lr must be a number > 0, got {config.lr!r}")
    for name in ("weight_decay", "warmup_epochs"):
        if not is_num(getattr(config, name)) or getattr(config, name) < 0:
            raise ConfigError(f"{method} {name} must be a number >= 0, got {getattr(config, name)!r}")
    if config.epochs and config.warmup_epochs > config.epochs:
        raise ConfigError(f"{method} warmup_epochs ({config.warmup_epochs}) must not exceed epochs ({config.epochs})")
    if not isinstance(config.device, str) or not config.device:
        raise ConfigError(f"{method} device must be 'auto' or a torch device such as 'cpu', got {config.device!r}")
    for name in ("lr", "weight_decay", "warmup_epochs"):
        setattr(config, name, float(getattr(config, name)))


def check_distillation(method: str, config) -> None:
    """distill_alpha in [0, 1], distill_tau > 0, holdout in [0, 1); made floats."""
    if not is_num(config.distill_alpha) or not 0 <= config.distill_alpha <= 1:
        raise ConfigError(f"{method} distill_alpha must be a number in [0, 1], got {config.distill_alpha!r}")
    if not is_num(config.distill_tau) or config.distill_tau <= 0:
        raise ConfigError(f"{method} distill_tau must be a number > 0, got {config.distill_tau!r}")
    if not is_num(config.holdout) or not 0 <= config.holdout < 1:
        raise ConfigError(f"{method} holdout must be a fraction in [0, 1), got {config.holdout!r}")
    for name in ("distill_alpha", "distill_tau", "holdout"):
        setattr(config, name, float(getattr(config, name)))


MAX_WIDTHS = 8  # students (learngene-pool) or anchors (sn-net): the papers use 2-3, more only multiplies the cost


def check_widths(method: str, widths, num_heads) -> None:
    """Widths: strictly increasing positive integers (narrowest first); heads: one per width, dividing it."""
    if widths is not None:
        if not isinstance(widths, list) or not 2 <= len(widths) <= MAX_WIDTHS or not all(
                is_int(w) and w >= 1 for w in widths):
            raise ConfigError(f"{method} widths must be a list of 2 to {MAX_WIDTHS} positive integers, got {widths!r}")
        if any(a >= b for a, b in zip(widths, widths[1:])):
            raise ConfigError(f"{method} widths must be strictly increasing (narrowest first), got {widths}")
    if num_heads is not None:
        if widths is None:
            raise ConfigError(f"{method} num_heads needs widths (one head count per width)")
        if not isinstance(num_heads, list) or len(num_heads) != len(widths) or not all(
                is_int(h) and h >= 1 for h in num_heads):
            raise ConfigError(f"{method} num_heads must be a list of {len(widths)} positive integers, got {num_heads!r}")
        for w, h in zip(widths, num_heads):
            if w % h:
                raise ConfigError(f"{method}: width {w} is not divisible by {h} heads; choose num_heads among "
                                  f"{[d for d in range(1, w + 1) if w % d == 0][:12]}")
