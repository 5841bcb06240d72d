"""Built-in methods. Importing this package registers each of them."""

from . import heuristic, pretrain_finetune, scratch  # noqa: F401
