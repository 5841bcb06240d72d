"""`pretrain-finetune`: the ancestry taken whole (the storage and cost reference)."""

from ...registry import MethodSpec, register_method
from .method import PretrainFinetuneConfig, describe_shapes, expand, extract, validate

register_method(MethodSpec(
    name="pretrain-finetune", config_cls=PretrainFinetuneConfig, extract=extract, expand=expand,
    summary="baseline: the whole ancestry is stored and fine-tuned (one shape only)",
    describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["PretrainFinetuneConfig"]
