"""Pure-PyTorch references: the oracle every fast path is tested against."""

from hitrs_fast.reference.attention import naive_attention

__all__ = ["naive_attention"]
