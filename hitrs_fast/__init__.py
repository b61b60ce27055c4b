"""hitrs_fast: Hi-TRS hierarchical skeleton Transformer (ECCV 2022), fast.

Importing this package initialises no CUDA context and imports neither DeepSpeed nor
DALI (those live in ``hitrs_fast.training`` and ``hitrs_fast.data.dali``).
"""

__version__ = "0.1.0"
