"""hitrs_fast: Hi-TRS hierarchical skeleton Transformer (ECCV 2022), fast.

Importing this package initialises no CUDA context and imports neither DeepSpeed nor
DALI (those live in ``hitrs_fast.training`` and ``hitrs_fast.data.dali``).
"""

__version__ = "0.1.0"

from hitrs_fast.attention import (  # noqa: E402
    FrameAttentionBlock,
    FrameMaskedAttention,
    MultiHeadAttention,
    frame_attention_block,
    frame_masked_attention,
)
from hitrs_fast.config import HiTRSConfig  # noqa: E402
from hitrs_fast.embedding import JointEmbedding  # noqa: E402
from hitrs_fast.masks import DenseMask, FrameMask, KeyPaddingMask, NoMask, SlidingWindowMask, TokenIdMask  # noqa: E402
from hitrs_fast.models import HiTRS, HiTRSOutput  # noqa: E402
from hitrs_fast.pretext import HiTRSForPretraining  # noqa: E402

__all__ = [
    "DenseMask", "FrameAttentionBlock", "FrameMask", "FrameMaskedAttention", "HiTRS", "HiTRSConfig",
    "HiTRSForPretraining", "HiTRSOutput", "JointEmbedding", "KeyPaddingMask", "MultiHeadAttention", "NoMask",
    "SlidingWindowMask", "TokenIdMask", "frame_attention_block", "frame_masked_attention",
]
