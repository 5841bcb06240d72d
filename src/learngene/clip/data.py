"""Image-caption pairs from the labelled datasets, and a compact-vocabulary tokenizer.

Captions. Each image gets one caption: a template filled with its class name and two
attribute words *computed from the image itself*, so the words are visually grounded:
brightness ("dark"/"bright": mean intensity below/above its class's median) and size
("small"/"large": fraction of lit pixels below/above its class's median). Three
paraphrase templates. A caption's *meaning* is (class, brightness, size): 4 per class;
retrieval counts a hit when the retrieved caption (or image's caption) has the query's
meaning (paraphrases are indistinguishable by design). The template is drawn per image
with a fixed seed.

Tokenizer. open_clip's bundled BPE tokenizer (no download), then a *compact vocabulary*:
the BPE ids used by the caption corpus are renumbered 2.. in increasing order, 0 stays
padding and 1 is "unknown". Ordering is kept, so start/end-of-text stay the two largest
ids and the end-of-text id is ``vocab_size - 1`` (what both CLIP adapters pool). Ours, for
CPU scale: a 49,408-row embedding would dwarf a width-96 tower; the table is stored with
the ancestry (``vocab_ids``) so any text is tokenised the same way later. A pretrained CLIP
with the 49,408-token table takes the BPE ids unchanged (``CaptionTokenizer.full``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import TensorDataset

from ..data import dataset_info, load_dataset
from ..errors import ConfigError

TEMPLATES = ("a photo of a {size} {bright} {name}", "a {bright} {name}, {size}", "this {name} is {size} and {bright}")
BRIGHTNESS = ("dark", "bright")
SIZES = ("small", "large")
CLASS_WORDS = {  # dataset class names -> caption words
    "T-shirt/top": "t-shirt", "Trouser": "trouser", "Pullover": "pullover", "Dress": "dress", "Coat": "coat",
    "Sandal": "sandal", "Shirt": "shirt", "Sneaker": "sneaker", "Bag": "bag", "Ankle boot": "ankle boot",
    **{str(d): w for d, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))},
}
PAD_ID, UNK_ID = 0, 1
OPEN_CLIP_VOCAB = 49408  # SOT 49406, EOT 49407


def class_word(name: str) -> str:
    return CLASS_WORDS.get(name, name.lower())


def _bpe(texts: Sequence[str], context_length: int) -> torch.Tensor:
    try:
        import open_clip
    except ImportError:
        raise ConfigError("captions are tokenised with open_clip's bundled tokenizer: pip install open_clip_torch") from None
    return open_clip.tokenize(list(texts), context_length=context_length)  # [N, S] int64, 0-padded, EOT-terminated


class CaptionTokenizer:
    """open_clip BPE + a compact vocabulary (see the module docstring). ``vocab_ids`` [V-2] are
    the BPE ids kept, increasing; compact id = 2 + position, pad 0, unknown 1.

    ``vocab_ids=None``: the whole BPE vocabulary, ids unchanged (``full``), the tokenizer of a
    pretrained CLIP with open_clip's / OpenAI's 49,408-token table (end-of-text 49407, the last id).
    """

    def __init__(self, vocab_ids: Sequence[int] | None, context_length: int):
        self.context_length = int(context_length)
        if vocab_ids is None:
            self.vocab_ids = None
            self.lookup = None
            return
        ids = sorted(int(i) for i in vocab_ids)
        if not ids or ids[-1] != OPEN_CLIP_VOCAB - 1 or PAD_ID in ids:
            raise ConfigError("vocab_ids must hold the end-of-text id 49407 and not the padding id 0")
        self.vocab_ids = ids
        self.lookup = torch.full((OPEN_CLIP_VOCAB,), UNK_ID, dtype=torch.long)
        self.lookup[torch.tensor(ids)] = torch.arange(2, 2 + len(ids))
        self.lookup[PAD_ID] = PAD_ID

    @classmethod
    def full(cls, context_length: int = 77) -> "CaptionTokenizer":
        """The whole BPE vocabulary (a pretrained CLIP's), ids as open_clip.tokenize gives them."""
        return cls(None, context_length)

    @classmethod
    def fit(cls, corpus: Sequence[str], context_length: int = 16) -> "CaptionTokenizer":
        """The compact vocabulary of ``corpus`` (plus start/end-of-text)."""
        used = set(_bpe(corpus, context_length).unique().tolist()) | {OPEN_CLIP_VOCAB - 2, OPEN_CLIP_VOCAB - 1}
        return cls(sorted(used - {PAD_ID}), context_length)

    @property
    def vocab_size(self) -> int:
        return OPEN_CLIP_VOCAB if self.vocab_ids is None else 2 + len(self.vocab_ids)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> token ids [N, context_length] int64 (compact ids, or BPE ids when full)."""
        ids = _bpe(texts, self.context_length)
        return ids if self.lookup is None else self.lookup[ids]

    def to_dict(self) -> dict:
        """What is stored with an ancestry or a learngene (JSON): the BPE ids kept (null: all) and the length."""
        return {"vocab_ids": None if self.vocab_ids is None else list(self.vocab_ids),
                "context_length": self.context_length}

    @classmethod
    def from_dict(cls, values: dict) -> "CaptionTokenizer":
        try:
            return cls(values["vocab_ids"], values["context_length"])
        except (KeyError, TypeError):
            raise ConfigError("a stored tokenizer needs 'vocab_ids' and 'context_length'") from None


def tokenizer_for(datasets: Sequence[str], context_length: int = 16) -> CaptionTokenizer:
    """The compact tokenizer of every caption the templates make for these datasets' class
    names (so zero-shot prompts for any of them use known words)."""
    names: list[str] = []
    for name in datasets:
        names += [n for n in dataset_info(name).class_names if n not in names]
    return CaptionTokenizer.fit([c for c, _, _ in all_captions(names)], context_length=context_length)


@dataclass
class CaptionPairs:
    """Images with one caption each. ``pairs`` (images [N,C,H,W], caption ids [N]) trains with
    ``learngene.train.fit``; ``tokens`` [M, S] are the distinct captions' compact ids."""

    images: torch.Tensor          # [N, C, H, W] normalised
    labels: torch.Tensor          # [N] class of each image
    caption_ids: torch.Tensor     # [N] index into captions
    captions: list[str]           # [M] distinct captions
    caption_class: torch.Tensor   # [M] class of each caption
    caption_meaning: torch.Tensor  # [M] class * 4 + brightness * 2 + size
    tokens: torch.Tensor          # [M, S]
    class_names: tuple[str, ...]

    @property
    def pairs(self) -> TensorDataset:
        return TensorDataset(self.images, self.caption_ids)

    def subset(self, n: int | None) -> "CaptionPairs":
        if n is None or n >= len(self.images):
            return self
        return CaptionPairs(self.images[:n], self.labels[:n], self.caption_ids[:n], self.captions,
                            self.caption_class, self.caption_meaning, self.tokens, self.class_names)


def all_captions(class_names: Sequence[str]) -> list[tuple[str, int, int]]:
    """Every (caption, class, meaning) the templates can make, in a fixed order."""
    out = []
    for c, name in enumerate(class_names):
        for b, bright in enumerate(BRIGHTNESS):
            for s, size in enumerate(SIZES):
                for template in TEMPLATES:
                    out.append((template.format(name=class_word(name), bright=bright, size=size), c, c * 4 + b * 2 + s))
    return out


def _attributes(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(brightness bit, size bit) per image, split at each class's median: [N] int64 each."""
    flat = images.flatten(1)  # [N, C*H*W], normalised values
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    unit = (flat - lo) / (hi - lo).clamp_min(1e-6)  # per-image [0, 1]
    intensity, area = flat.mean(1), (unit > 0.5).float().mean(1)  # [N]
    bright, size = torch.zeros_like(labels), torch.zeros_like(labels)
    for c in range(num_classes):
        mine = labels == c
        if mine.any():
            bright[mine] = (intensity[mine] > intensity[mine].median()).long()
            size[mine] = (area[mine] > area[mine].median()).long()
    return bright, size


def caption_pairs(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                  tokenizer: CaptionTokenizer, *, seed: int = 0) -> CaptionPairs:
    """Caption every image (attributes from its pixels, template drawn with ``seed``)."""
    catalogue = all_captions(class_names)
    captions = [c for c, _, _ in catalogue]
    bright, size = _attributes(images, labels, len(class_names))
    template = torch.randint(len(TEMPLATES), labels.shape, generator=torch.Generator().manual_seed(seed))
    # catalogue order: class, brightness, size, template
    caption_ids = ((labels * 2 + bright) * 2 + size) * len(TEMPLATES) + template
    return CaptionPairs(images=images, labels=labels.long(), caption_ids=caption_ids.long(), captions=captions,
                        caption_class=torch.tensor([c for _, c, _ in catalogue]),
                        caption_meaning=torch.tensor([m for _, _, m in catalogue]),
                        tokens=tokenizer(captions), class_names=tuple(class_names))


def load_caption_pairs(dataset: str, split: str, tokenizer: CaptionTokenizer, *, image_size: int = 28,
                       limit: int | None = None, seed: int = 0) -> CaptionPairs:
    """Caption pairs from a registered labelled dataset (``fashion-mnist``, ``mnist-5k``...), grey, first ``limit``."""
    ds = load_dataset(dataset, split, image_size=image_size, in_chans=1)
    images, labels = ds.images, ds.labels
    if limit is not None:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit]
        images, labels = images[order], labels[order]
    return caption_pairs(images, labels, ds.info.class_names, tokenizer, seed=seed)
