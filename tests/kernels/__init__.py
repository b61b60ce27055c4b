"""Kernel tests (Triton kernels vs their references). Shared skip helpers live in tests/support/devices.py."""
