"""Triton kernels of hitrs_fast, installed as ``hitrs_fast.kernels``.

One folder per op, each with ``kernels.py`` (the ``@triton.jit`` kernels), its tuning and ``ops.py`` (launchers,
``torch.library`` registration, ``autograd.Function``); ``common/`` holds what they share (jit helpers, the mask
rules, tuning switches, launch and registration); :mod:`~hitrs_fast.kernels.capabilities` declares what each
kernel accepts without importing triton:

- :mod:`~hitrs_fast.kernels.frame_attention`: masked softmax attention (C-TRS frame mask, key padding, none);
- :mod:`~hitrs_fast.kernels.attention_block`: the whole pre-LN attention sublayer in one kernel (F-TRS);
- :mod:`~hitrs_fast.kernels.joint_embedding`: Linear -> GELU -> LayerNorm + PE of the F-TRS input.

Importing this package imports nothing heavy: each op imports triton itself and is loaded only when a Triton
backend is first used.
"""
