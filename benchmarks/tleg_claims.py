"""TLEG's storage and pre-training-cost claims, counted on our artifact (no training, CPU, ~1 min).

    python benchmarks/tleg_claims.py [--preset deit-small] [--depths 1-12] [--aux-epochs 150] [--pre-epochs 300]

Paper (Xia et al., AAAI 2024, abstract): to initialise models of many depths TLEG stores
about 19x fewer parameters and spends about 5x less pre-training than pre-training and
fine-tuning one model per depth. The abstract does not give the depth set or the epoch
budgets behind those numbers, so this script states its assumptions and prints:

  stored    exact tensor count of a TLEG learngene (theta_A, theta_B, stem, final norm, head)
            vs the sum of the parameters of one pre-trained model per depth;
  compute   TLEG: one auxiliary (depth-12) training of `aux_epochs` epochs, each sample costing
            3 x forward(aux) + forward(teacher) -- as learngene.train counts it -- vs Pre-Fin:
            3 x forward(depth-L model) x `pre_epochs` for every depth L. The teacher here is
            the ancestry preset at depth 12 (the paper used LeViT-384).

Nothing is written unless --out is given (JSON).
"""

from __future__ import annotations

import argparse
import json

import torch

import learngene
import learngene.methods.tleg  # noqa: F401  (registers the method)
from learngene.methods.tleg.method import TlegAuxiliary, init_tensors, tleg_arch
from learngene.arch import vit_kwargs
from learngene.train.flops import forward_flops_per_sample


def parse_depths(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="deit-small")
    p.add_argument("--depths", default="1-12", help="descendant depths to initialise, e.g. 1-12 or 6,9,12")
    p.add_argument("--aux-depth", type=int, default=12)
    p.add_argument("--aux-epochs", type=float, default=150.0, help="paper: 150 (S), 100 (B)")
    p.add_argument("--pre-epochs", type=float, default=300.0, help="DeiT's from-scratch budget per model")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    ancestry_arch = vit_kwargs(args.preset)
    depths = parse_depths(args.depths)
    ancestry = learngene.create_vit(ancestry_arch)  # the teacher of the auxiliary model
    arch = learngene.arch_of(ancestry)
    tensors = init_tensors(arch)
    stored_tleg = sum(t.numel() for t in tensors.values())
    aux = TlegAuxiliary(tleg_arch(arch, args.aux_depth), tensors)
    sample = torch.randn(1, arch.in_chans, arch.img_size, arch.img_size)
    fwd_aux, fwd_teacher = forward_flops_per_sample(aux, sample), forward_flops_per_sample(ancestry, sample)

    stored_pre, flops_pre, rows = 0, 0.0, []
    for depth in depths:
        model = learngene.create_vit(ancestry_arch, depth=depth)
        n, f = sum(q.numel() for q in model.parameters()), forward_flops_per_sample(model, sample)
        stored_pre += n
        flops_pre += 3 * f * args.pre_epochs
        rows.append({"depth": depth, "parameters": n, "forward_flops": f})
    flops_tleg = (3 * fwd_aux + fwd_teacher) * args.aux_epochs
    result = {
        "preset": args.preset, "depths": depths, "aux_depth": args.aux_depth,
        "aux_epochs": args.aux_epochs, "pre_epochs": args.pre_epochs,
        "stored": {"tleg": stored_tleg, "pre_finetune": stored_pre, "ratio": stored_pre / stored_tleg},
        "pretrain_flops_per_image_epoch_sum": {"tleg": flops_tleg, "pre_finetune": flops_pre,
                                               "ratio": flops_pre / flops_tleg},
        "models": rows,
    }
    print(f"{args.preset}, descendants of depth {args.depths}:")
    print(f"  stored parameters  TLEG {stored_tleg:,}  vs  Pre-Fin {stored_pre:,}  -> {result['stored']['ratio']:.1f}x "
          "(paper: ~19x)")
    print(f"  pre-training FLOPs TLEG {flops_tleg:.3g}  vs  Pre-Fin {flops_pre:.3g} per image  -> "
          f"{result['pretrain_flops_per_image_epoch_sum']['ratio']:.1f}x (paper: ~5x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
