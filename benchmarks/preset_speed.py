"""Training-step speed of candidate vit-mini shapes (depth 12, 28x28 grey, batch 128, AdamW).

How the vit-mini preset was chosen: run `python benchmarks/preset_speed.py` on an idle
machine; it prints images/s and the implied seconds per 60,000-image Fashion-MNIST epoch.
Seen on 2 idle cores, torch 2.14.1: width 96 / 6 heads / patch 7 at 608 images/s (99 s per epoch),
width 96 / 3 heads / patch 4 at 171 images/s (351 s per epoch).
"""
import torch, time
from timm.models.vision_transformer import VisionTransformer
torch.manual_seed(0)
for dim, heads, patch in [(96,3,4),(64,4,4),(96,6,7),(128,4,7),(192,6,7),(72,6,4)]:
    m = VisionTransformer(img_size=28, patch_size=patch, in_chans=1, embed_dim=dim, depth=12, num_heads=heads, num_classes=10)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randn(128,1,28,28); y = torch.randint(0,10,(128,))
    for i in range(8):
        if i==3: t=time.time()
        loss = torch.nn.functional.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
    dt=(time.time()-t)/5
    print(dim, heads, patch, sum(p.numel() for p in m.parameters()), f"{128/dt:.0f} img/s -> epoch {60000/(128/dt):.0f}s", flush=True)
