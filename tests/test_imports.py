import subprocess
import sys

CHECK = """
import sys, torch
import hitrs_fast, hitrs_fast.models, hitrs_fast.pretext, hitrs_fast.attention, hitrs_fast.embedding
import hitrs_fast.data
assert not torch.cuda.is_initialized(), "importing hitrs_fast initialised CUDA"
heavy = [m for m in ("deepspeed", "nvidia.dali") if m in sys.modules]
assert not heavy, f"importing hitrs_fast imported {heavy}"
print("ok")
"""


def test_import_is_light():
    # A fresh interpreter: other tests may have imported the heavy modules already.
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_kernels_installed_under_package():
    import hitrs_fast.kernels

    assert hitrs_fast.kernels.__name__ == "hitrs_fast.kernels"
