"""Kernels the word-pooled model needs to be fast, each with a plain-PyTorch reference.

Every op takes `impl`: "auto" (the fast path on CUDA, the reference elsewhere), "reference" or "fast".
Setting WORDPOOL_OPS=reference in the environment forces the reference everywhere (for debugging a
fast path, or comparing the two on one machine).
"""
from ops.cross_entropy import cross_entropy_sum
from ops.varlen_attention import varlen_attention

__all__ = ["cross_entropy_sum", "varlen_attention"]
