"""benchmarks/tleg_claims.py counts storage and pre-training FLOPs on the real artifact: a run at
vit-mini's shape must write counts that agree with the models it builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import learngene

ROOT = Path(__file__).resolve().parents[1]


def test_tleg_claims_counts_match_the_models(tmp_path):
    out = tmp_path / "claims.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tleg_claims.py"), "--preset", "vit-mini",
                    "--depths", "2,6", "--out", str(out)], check=True, capture_output=True, timeout=300)
    claims = json.loads(out.read_text())
    assert [m["depth"] for m in claims["models"]] == [2, 6]
    # pre-train + fine-tune stores one whole model per depth: the sum of the descendants' parameters
    whole = sum(sum(p.numel() for p in learngene.create_vit("vit-mini", depth=d).parameters()) for d in (2, 6))
    assert claims["stored"]["pre_finetune"] == whole
    assert claims["stored"]["tleg"] < whole
    assert abs(claims["stored"]["ratio"] - whole / claims["stored"]["tleg"]) < 1e-9
