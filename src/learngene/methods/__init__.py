"""Built-in methods. Importing this package registers each of them."""

from . import auto_learngene, heuristic, pretrain_finetune, scratch, tleg  # noqa: F401
