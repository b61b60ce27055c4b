"""What every kernel op of ``hitrs_fast.kernels`` shares (one place, no op imports another op's files):

- :mod:`~hitrs_fast.kernels.common.jit`: ``@triton.jit`` arithmetic helpers (dots, casts, exp2 constants);
- :mod:`~hitrs_fast.kernels.common.masks`: the attention mask rules computed from token indices;
- :mod:`~hitrs_fast.kernels.common.tuning`: interpreter / single-config switches, the autotuner's benchmarker;
- :mod:`~hitrs_fast.kernels.common.launch`: eager launch vs ``wrap_triton`` while torch traces;
- :mod:`~hitrs_fast.kernels.common.registration`: ``torch.library`` registration of an op's host functions.

The limits each kernel accepts live in :mod:`hitrs_fast.kernels.capabilities`, which imports no triton.
"""
