"""Triton kernels of hitrs_fast, installed as ``hitrs_fast.kernels``.

Importing this package imports nothing heavy: each kernel module imports triton
itself and is loaded only when a Triton backend is first used.
"""
