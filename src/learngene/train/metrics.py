"""Classification report as physicists read it: per-class precision, recall, F1, confusion matrix.

    from learngene.train.metrics import predict, classification_report
    predictions = predict(model, test_ds.images)                      # int64 [N]
    report = classification_report(test_ds.labels, predictions, test_ds.info.class_names)
    report["per_class"]["proton"]["recall"], report["confusion"]        # rows = true, cols = predicted

Definitions (one class c against the rest): precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2 P R / (P + R). A ratio with a zero denominator is reported as 0.0 (scikit-learn's
``zero_division=0``). ``macro`` averages the per-class values with equal weight.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from learngene.errors import ConfigError


def confusion_matrix(targets: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """int64 [K, K]: entry [t, p] counts the samples of true class t predicted as p."""
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if targets.shape != predictions.shape:
        raise ConfigError(f"targets ({targets.size}) and predictions ({predictions.size}) differ in length")
    for name, values in (("targets", targets), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ConfigError(f"{name} hold labels outside 0..{num_classes - 1}")
    return np.bincount(targets * num_classes + predictions, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


def classification_report(targets: Any, predictions: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """{"accuracy", "per_class": {name: {precision, recall, f1, support}}, "macro": {...}, "confusion"}.

    ``confusion`` is the confusion matrix as nested lists (rows = true class, columns =
    predicted), so the whole report is JSON-ready.
    """
    matrix = confusion_matrix(targets, predictions, len(class_names))
    true_positives = np.diag(matrix)
    per_class: dict[str, dict[str, float]] = {}
    for index, name in enumerate(class_names):
        precision = _ratio(true_positives[index], matrix[:, index].sum())
        recall = _ratio(true_positives[index], matrix[index, :].sum())
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(matrix[index, :].sum()),
        }
    macro = {key: float(np.mean([row[key] for row in per_class.values()])) for key in ("precision", "recall", "f1")}
    return {
        "accuracy": _ratio(true_positives.sum(), matrix.sum()),
        "per_class": per_class,
        "macro": macro,
        "confusion": matrix.tolist(),
    }


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Arg-max class of every image [N, C, H, W] -> int64 [N], in eval mode on the model's device."""
    was_training = model.training
    model.eval()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        parts = [model(images[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
