"""One flat training loop for every method: classification of the ancestry and the
descendants, and distillation into auxiliary models.

    from learngene.train import TrainConfig, fit, evaluate
    result = fit(model, train_ds, test_ds, TrainConfig(epochs=10), out_dir="runs/x")

Modules: config (TrainConfig, TrainResult), loop (fit, evaluate), optim (AdamW groups,
lr schedule, layer-wise lr decay), distill (CE, soft-target CE + DeiT KD losses), augment
(DeiT's RandAugment, random erasing and Mixup/CutMix on private random streams), data (data
order, repeated augmentation, sharding, batches), checkpoint (safe checkpoints), distributed
(torchrun/DDP), flops (cost estimate), metrics (predict, per-class precision/recall/F1 and
confusion matrix).
"""

from learngene.train.config import TrainConfig, TrainResult
from learngene.train.loop import evaluate, fit

__all__ = ["TrainConfig", "TrainResult", "fit", "evaluate"]
