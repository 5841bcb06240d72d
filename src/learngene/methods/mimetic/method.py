"""Mimetic initialisation: self-attention weights shaped like a pre-trained ViT's, without data.

Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers", ICML 2023
(arXiv 2305.09828). Structure without knowledge: the learngene stores nothing (like
``scratch``); a descendant is timm's initialisation of the asked shape with the attention
of every block replaced as follows (a fresh random draw per block and per head).

Notation (the paper's, row vectors): tokens X [n, D]; head h scores
X W_q^h (X W_k^h)^T / sqrt(hd) with W_q^h, W_k^h [D, hd]; the attention output is
sum_h A^h X W_v^h W_proj^h with W_v = [W_v^1 .. W_v^H] [D, D] and W_proj [D, D]. PyTorch
``Linear`` weights are [out, in], so in the canonical stack
W_q^h = q.weight[h]^T, W_k^h = k.weight[h]^T, W_v = v.weight.reshape(D, D)^T and
W_proj = proj.weight.reshape(D, D)^T.

- **Query-key, per head** (the paper's construction): Z1 ~ N(0, 1/D) [D, D],
  M1 = alpha1 Z1 + beta1 I = U S V^T (SVD), then
  W_q^h = U[:, :hd] sqrt(S[:hd]) and W_k^h = V[:, :hd] sqrt(S[:hd]).
  A head can only realise rank hd, so W_q^h W_k^h^T = U_hd S_hd V_hd^T is the best
  rank-hd approximation of the D x D target M1 (truncated SVD), not M1 itself. Each head
  draws its own Z1. Its diagonal is positive (about beta1 * hd / D plus the share of
  alpha1 Z1 the top singular directions carry); the sum over heads is not a target.
- **Value-projection, full width** (as the paper: W_v and W_proj are D x D and full rank):
  Z2 ~ N(0, 1/D), M2 = alpha2 Z2 - beta2 I = U S V^T, W_v = U sqrt(S),
  W_proj = sqrt(S) V^T, so W_v W_proj = M2 exactly (up to float32 rounding). Head h's
  share W_v[:, h] W_proj[h, :] is rank hd; the heads sum to M2.
- Defaults alpha1 = beta1 = 0.7, alpha2 = beta2 = 0.4: the values the paper gives for its
  ViT experiments (the same numbers appear hard-coded in public re-implementations).

Computing the query-key truncation (speed): a head needs only the top hd singular triplets
of M1 [D, D], so they come from the symmetric Gram matrix M1^T M1 = V S^2 V^T (one BLAS
``syrk``, half a matrix product): LAPACK's ``syevr`` (MRRR) returns only its top hd
eigenvectors V_hd (scipy's ``subset_by_index``; it still tridiagonalises the whole matrix,
the part no exact method avoids), S_hd = sqrt of their eigenvalues, U_hd = M1 V_hd / S_hd.
The product W_q^h W_k^h^T = U_hd S_hd V_hd^T is the same truncated SVD; against LAPACK's
SVD it agrees to float32 rounding (~1e-6), and a singular pair may come out with both
vectors' signs flipped (the product does not change). The top hd singular values of M1
are far from zero (about beta1 and up), so dividing by S_hd is well conditioned. The
value-projection keeps the full SVD (LAPACK ``gesdd``): it needs every singular
direction, including the small ones.

Cost at DeiT-B (D = 768, 12 heads, 12 blocks): 144 truncated SVDs of 768 x 768 matrices and
12 full ones. ``python benchmarks/perf.py --threads 2 --only expand`` measured the whole
expansion at 7.5 s (best of 5, ``perf-expand.json``), against 13 s with a full symmetric
eigendecomposition per head (the session-3 ``perf-expand.json``). LAPACK's partial solver
still reduces each Gram matrix to tridiagonal form, the O(D^3) part no exact method avoids,
so the paper's construction stays far above the 1 s of the other methods on this CPU; only
an approximate (randomised) truncation could do better, and that would not be the paper's init.

Threads: the decompositions run on one thread (torch's and the BLAS's). At D = 768
LAPACK's eigensolvers gain little from threads, and on a machine whose cores are shared
they collapse (threads spin at barriers): one DeiT-B block took 6-7 s on 2 threads against
1.8 s on 1, on 2 shared cores under load (a whole DeiT-B expansion: 413 s before this
was done).

Departures and choices:
- Z is Gaussian N(0, 1/D) as the paper's text states; the uniform distribution of equal
  variance that some code listings default to is not offered.
- The V/O product is built exactly as the paper writes it (X W_v W_proj = X M2). Some
  public re-implementations put U sqrt(S) straight into the [out, in] weight tensors,
  which realises (sqrt(S) V^T U sqrt(S))^T instead of M2 (still negative-diagonal).
- Biases (q/k/v, proj) keep timm's zeros; everything outside q/k/v/proj weights (patch
  embedding, position embedding, class token, norms, MLP, head) is timm's own init. The
  paper's other recipe choices (training schedule, augmentation) are out of scope.
"""

from __future__ import annotations

import contextlib
import math

import scipy.linalg
import scipy.linalg.blas
import threadpoolctl
import torch

from ...arch import ViTArch, create_vit
from ...artifact import Artifact
from ...stack import to_stack
from .._common import Tensors
from .config import MimeticConfig


def top_singular_triplets(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``rank`` largest singular triplets of square float32 matrices ``m`` [..., D, D], largest first.

    Returns U [..., D, rank], S [..., rank], V [..., D, rank] with m ~ U diag(S) V^T (the
    truncated SVD), from the top eigenpairs of the Gram matrix m^T m (module docstring).
    Meant for singular values well above zero, as mimetic's M1 has.
    """
    *batch, d, _ = m.shape
    flat = m.reshape(-1, d, d)
    u, s, v = torch.empty(len(flat), d, rank), torch.empty(len(flat), rank), torch.empty(len(flat), d, rank)
    for i, matrix in enumerate(flat):
        matrix = matrix.contiguous().float()
        # numpy's view of matrix^T is Fortran-ordered matrix: syrk(a = matrix^T) = matrix^T matrix, upper triangle.
        gram = scipy.linalg.blas.ssyrk(1.0, matrix.numpy().T, trans=0, lower=0)        # [D, D]
        eigenvalues, eigenvectors = scipy.linalg.eigh(gram, lower=False, subset_by_index=[d - rank, d - 1],
                                                      driver="evr", overwrite_a=True, check_finite=False)  # ascending
        v[i] = torch.from_numpy(eigenvectors).flip(-1)                                  # [D, rank], largest first
        s[i] = torch.from_numpy(eigenvalues).flip(-1).clamp_min(0).sqrt()               # [rank]
        u[i] = (matrix @ v[i]) / s[i].clamp_min(torch.finfo(torch.float32).tiny)       # [D, rank], unit columns
    return u.reshape(*batch, d, rank), s.reshape(*batch, rank), v.reshape(*batch, d, rank)


def mimetic_attention(embed_dim: int, num_heads: int, config: MimeticConfig) -> Tensors:
    """Canonical q/k/v/proj weights of one block (draws from torch's global RNG).

    Returns ``q.weight k.weight v.weight [H, hd, D]`` and ``proj.weight [D, H, hd]``.
    """
    D, H = embed_dim, num_heads
    hd = D // H
    # Query-key: one D x D target per head, truncated to rank hd. Targets are made one head at a
    # time, in place in Z1 (memory: Z1 and one head's work, not H copies of [D, D]).
    z1 = torch.randn(H, D, D).div_(math.sqrt(D))
    q, k = torch.empty(H, hd, D), torch.empty(H, hd, D)
    for h in range(H):
        m1 = z1[h].mul_(config.alpha1)
        m1.diagonal().add_(config.beta1)                                  # alpha1 Z1 + beta1 I  [D, D]
        u_hd, s_hd, v_hd = top_singular_triplets(m1, hd)                  # [D, hd] [hd] [D, hd]
        root = s_hd.sqrt()
        q[h] = (u_hd * root).T                                            # (U_hd sqrt S)^T: [hd, D]
        k[h] = (v_hd * root).T                                            # (V_hd sqrt S)^T: [hd, D]
    del z1
    # Value-projection: one D x D target for all heads together, full rank.
    z2 = torch.randn(D, D) / math.sqrt(D)
    m2 = z2.mul_(config.alpha2)
    m2.diagonal().sub_(config.beta2)                                      # alpha2 Z2 - beta2 I  [D, D]
    u2, s2, vh2 = (torch.from_numpy(x) for x in scipy.linalg.svd(m2.numpy(), lapack_driver="gesdd", check_finite=False))
    root2 = s2.sqrt()
    w_v = u2 * root2[None, :]        # paper's W_v [D_in, D_out]
    w_proj = root2[:, None] * vh2    # paper's W_proj [D_in, D_out]; W_v @ W_proj = M2
    return {
        "q.weight": q,
        "k.weight": k,
        "v.weight": w_v.T.reshape(H, hd, D).contiguous(),        # Linear weight = W_v^T, rows grouped by head
        "proj.weight": w_proj.T.reshape(D, H, hd).contiguous(),  # Linear weight = W_proj^T, columns by head
    }


@contextlib.contextmanager
def _one_thread():
    """Run on one thread, torch's and the BLAS's scipy uses (see the module docstring), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def extract(ancestry, config: MimeticConfig, data=None) -> Artifact:
    return Artifact(method="mimetic", config=dict(vars(config)), tensors={})


def describe_shapes(gene: Artifact) -> str:
    return "any depth, width and head count (data-free mimetic init, nothing inherited)"


def expand(gene: Artifact, arch: ViTArch):
    config = MimeticConfig(**gene.config)
    model = create_vit(arch)  # timm's own init, exactly scratch's for the same seed
    stack = to_stack(model)   # views of the model's parameters: written in place, no second copy
    with torch.no_grad(), _one_thread():
        for block in stack.blocks:
            for key, tensor in mimetic_attention(stack.embed_dim, stack.num_heads, config).items():
                block[key].copy_(tensor)
    return model
