"""Semantic IDs: embed item texts (optionally fused with behaviour), quantize them (residual k-means or RQ-VAE),
make them unique and report on them.

The stage that runs it all is align/sid/build.py (`align sids`).
"""

from align.sid.collisions import check_code_space, collision_stats, make_unique
from align.sid.embed import DEFAULT_ENCODER, encode_texts
from align.sid.fusion import behaviour_vectors, fuse, fuse_behaviour, user_item_matrix
from align.sid.report import sid_report
from align.sid.rqkmeans import RQResult, balanced_assign, fit_rq_kmeans
from align.sid.rqvae import RQVAEResult, fit_rq_vae, sinkhorn_assign

__all__ = [
    "DEFAULT_ENCODER",
    "RQResult",
    "RQVAEResult",
    "balanced_assign",
    "behaviour_vectors",
    "check_code_space",
    "collision_stats",
    "encode_texts",
    "fit_rq_kmeans",
    "fit_rq_vae",
    "fuse",
    "fuse_behaviour",
    "make_unique",
    "sid_report",
    "sinkhorn_assign",
    "user_item_matrix",
]
