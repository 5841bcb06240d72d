"""MM-LG vs scratch CLIP, pre-train + fine-tune and TLEG per tower, at CPU scale.

Ancestry: clip-mini (image 6 blocks, text 6 blocks, width 96) trained contrastively on
Fashion-MNIST caption pairs. Each learngene is condensed on the same pairs. Descendant CLIPs
(``--image-layers``/``--text-layers``) are fine-tuned contrastively on mnist-5k caption pairs
and evaluated on its test split: zero-shot accuracy, retrieval recall@1/5 (mean of both
directions), before and after fine-tuning. Single-modality rows: the image tower as a timm ViT
classifier fine-tuned on mnist-5k (mm-lg vs scratch). Every row records parameters stored and
pre-training cost (ancestry training + condensation FLOPs).

    python benchmarks/mmlg.py                        # defaults: ~15-20 min on 2 CPU cores
    python benchmarks/mmlg.py --tiny --out /tmp/m.json   # a 2-3 minute check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from learngene._io import atomic_write_json
from learngene.bench.report import git_commit, machine_info
from learngene.clip import (CaptionTokenizer, build_open_clip, clip_mini_arch, evaluate_clip, load_caption_pairs,
                            open_clip_to_stack, stack_to_open_clip, train_clip)
from learngene.clip.data import all_captions
from learngene.clip.model import class_text_embeddings, image_classifier_arch, image_tower_to_timm
from learngene.data import dataset_info
from learngene.methods.mm_lg import MmlgConfig, expand_clip, extract_clip
from learngene.methods.mm_lg.tleg_towers import expand_tleg_towers, extract_tleg_towers
from learngene.train import TrainConfig, fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ancestry-epochs", type=int, default=3)
    ap.add_argument("--ancestry-limit", type=int, default=20000, help="Fashion-MNIST pairs for the ancestry")
    ap.add_argument("--condense-epochs", type=int, default=1)
    ap.add_argument("--num-layers", type=int, default=2, help="mm-lg K")
    ap.add_argument("--image-layers", type=int, default=4)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--down-limit", type=int, default=None, help="mnist-5k train pairs (default all)")
    ap.add_argument("--seed", type=int, default=0)
    # fp32 by default: seeds 0 and 1 (mmlg.json, mmlg-seed1.json) ran in fp32, before amp="auto" chose bf16 on CPU
    ap.add_argument("--amp", default="off", choices=("off", "auto", "bf16"), help="TrainConfig.amp of every run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny settings to check the script (~2-3 min)")
    ap.add_argument("--out", default="benchmarks/results/mmlg.json")
    a = ap.parse_args(argv)
    if a.tiny:
        a.ancestry_epochs, a.ancestry_limit, a.condense_epochs, a.finetune_epochs, a.down_limit = 1, 1024, 1, 1, 512
    torch.set_num_threads(a.threads)
    start = time.time()

    names = list(dataset_info("fashion-mnist").class_names) + list(dataset_info("mnist-5k").class_names)
    tokenizer = CaptionTokenizer.fit([c for c, _, _ in all_captions(names)], context_length=16)
    pretrain = load_caption_pairs("fashion-mnist", "train", tokenizer, limit=a.ancestry_limit, seed=a.seed)
    down_train = load_caption_pairs("mnist-5k", "train", tokenizer, limit=a.down_limit, seed=a.seed)
    down_test = load_caption_pairs("mnist-5k", "test", tokenizer, seed=a.seed)
    arch = clip_mini_arch(tokenizer.vocab_size)
    small = {**arch, "image": {**arch["image"], "layers": a.image_layers}, "text": {**arch["text"], "layers": a.text_layers}}
    recipe = dict(batch_size=128, weight_decay=0.05, seed=a.seed, checkpoint=False, device="cpu", amp=a.amp)

    print(f"ancestry: clip-mini on {len(pretrain.images)} Fashion-MNIST pairs, {a.ancestry_epochs} epochs", flush=True)
    torch.manual_seed(a.seed)
    ancestry = build_open_clip(arch)
    anc = train_clip(ancestry, pretrain, TrainConfig(epochs=a.ancestry_epochs, lr=1e-3, warmup_epochs=0.5, **recipe))
    ancestry_flops = anc.train_flops
    print(f"  {anc.wall_time_s:.0f}s, loss {anc.train_loss:.3f}; fashion test:",
          evaluate_clip(ancestry, load_caption_pairs("fashion-mnist", "test", tokenizer, limit=2000)), flush=True)

    condense = MmlgConfig(num_layers=a.num_layers, epochs=a.condense_epochs, seed=a.seed, device="cpu")
    t = time.time()
    mmlg = extract_clip(ancestry, condense, pretrain)
    mmlg_s = time.time() - t
    t = time.time()
    tleg = extract_tleg_towers(ancestry, condense, pretrain)
    tleg_s = time.time() - t
    print(f"condensed: mm-lg {mmlg.num_parameters:,} params ({mmlg_s:.0f}s), tleg-towers "
          f"{tleg.num_parameters:,} ({tleg_s:.0f}s)", flush=True)

    ancestry_params = sum(p.numel() for p in ancestry.parameters())
    torch.manual_seed(a.seed + 1)
    candidates = {
        "scratch": (build_open_clip(small), 0, 0.0),
        "pretrain-finetune": (stack_to_open_clip(open_clip_to_stack(ancestry)), ancestry_params, ancestry_flops),
        "tleg-towers": (stack_to_open_clip(expand_tleg_towers(tleg, image_layers=a.image_layers,
                                                              text_layers=a.text_layers)),
                        tleg.num_parameters, ancestry_flops + tleg.provenance["cost"]["flops"]),
        "mm-lg": (expand_clip(mmlg, image_layers=a.image_layers, text_layers=a.text_layers),
                  mmlg.num_parameters, ancestry_flops + mmlg.provenance["cost"]["flops"]),
    }
    rows = []
    for method, (model, stored, pre_flops) in candidates.items():
        before = evaluate_clip(model, down_test)
        r = train_clip(model, down_train, TrainConfig(epochs=a.finetune_epochs, lr=5e-4, warmup_epochs=0.3, **recipe))
        after = evaluate_clip(model, down_test)
        row = dict(kind="clip", method=method, image_layers=len(model.visual.transformer.resblocks),
                   text_layers=len(model.transformer.resblocks), params=sum(p.numel() for p in model.parameters()),
                   stored=stored, pretrain_flops=pre_flops, finetune_flops=r.train_flops,
                   zero_shot_before=before["zero_shot_acc"], zero_shot_acc=after["zero_shot_acc"],
                   r1=after["r@1"], r5=after["r@5"], metrics_after=after, metrics_before=before,
                   finetune_wall_s=r.wall_time_s)
        rows.append(row)
        print(f"  {method:18s} stored {stored:>9,}  zero-shot {before['zero_shot_acc']:.3f} -> "
              f"{after['zero_shot_acc']:.3f}  R@1 {after['r@1']:.3f}  R@5 {after['r@5']:.3f}", flush=True)

    # single modality: the image tower as a timm ViT classifier on mnist-5k
    from learngene.data import load_dataset

    train_img = load_dataset("mnist-5k", "train", image_size=28, in_chans=1)
    test_img = load_dataset("mnist-5k", "test", image_size=28, in_chans=1)
    torch.manual_seed(a.seed + 2)
    classifier_arch = image_classifier_arch(arch, 10, depth=a.image_layers).timm_kwargs()
    import timm.models.vision_transformer as tvit

    stack = expand_clip(mmlg, image_layers=a.image_layers, library=None)
    classes = class_text_embeddings(stack_to_open_clip(stack), down_test)
    tleg_stack = expand_tleg_towers(tleg, image_layers=a.image_layers, text_layers=a.text_layers)
    ancestry_stack = open_clip_to_stack(ancestry)
    vits = {  # every learngene classifier starts from its own text embeddings of the class names
        "scratch": (tvit.VisionTransformer(**classifier_arch), 0),
        "pretrain-finetune": (image_tower_to_timm(ancestry_stack, 10, in_chans=1, class_embeddings=class_text_embeddings(
            stack_to_open_clip(ancestry_stack), down_test)), ancestry_params),
        "tleg-towers": (image_tower_to_timm(tleg_stack, 10, in_chans=1, class_embeddings=class_text_embeddings(
            stack_to_open_clip(tleg_stack), down_test)), tleg.num_parameters),
        "mm-lg": (image_tower_to_timm(stack, 10, in_chans=1, class_embeddings=classes), mmlg.num_parameters)}
    for method, (vit, stored) in vits.items():
        r = fit(vit, train_img, test_img, TrainConfig(epochs=a.finetune_epochs, lr=1e-3, **recipe), progress=False)
        rows.append(dict(kind="image-classifier", method=method, image_layers=len(vit.blocks), stored=stored,
                         params=sum(p.numel() for p in vit.parameters()), top1=r.eval_acc,
                         finetune_flops=r.train_flops))
        print(f"  classifier {method:10s} top-1 {r.eval_acc:.3f}", flush=True)

    record = dict(benchmark="mmlg", command=" ".join(["python benchmarks/mmlg.py"] + (argv or sys.argv[1:])),
                  args=vars(a), commit=git_commit(), machine=machine_info(), wall_time_s=time.time() - start,
                  ancestry=dict(arch=arch, params=ancestry_params, train_flops=ancestry_flops,
                                train_wall_s=anc.wall_time_s, samples=anc.samples_seen),
                  condensation=dict(mmlg_wall_s=mmlg_s, tleg_towers_wall_s=tleg_s,
                                    mmlg=mmlg.provenance["cost"], tleg_towers=tleg.provenance["cost"]),
                  rows=rows)
    atomic_write_json(Path(a.out), record)
    print(f"wrote {a.out} ({time.time() - start:.0f}s)")
    print(json.dumps([{k: v for k, v in r.items() if not k.startswith("metrics")} for r in rows], indent=1)[:0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
