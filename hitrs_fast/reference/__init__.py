"""Pure-PyTorch references: the oracle every fast path is tested against."""

from hitrs_fast.reference.attention import naive_attention, naive_attention_block
from hitrs_fast.reference.embedding import naive_joint_embedding as naive_joint_embedding
from hitrs_fast.reference.ffn import naive_ffn_block

__all__ = ["naive_attention", "naive_attention_block", "naive_ffn_block", "naive_joint_embedding"]
