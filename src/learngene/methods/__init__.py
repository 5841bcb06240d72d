"""Built-in methods. Importing this package registers each of them."""

from . import auto_learngene, heuristic, mimetic, peg, pretrain_finetune, scratch, tleg, weight_selection  # noqa: F401
