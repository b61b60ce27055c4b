"""Downstream heads on the Hi-TRS encoder. Each goes through the encoder's one API (``HiTRS.prepare``,
``encode_frames``, ``encode_clips`` / ``encode_clip_positions``, ``encode_video`` or ``HiTRS.forward``).

- :class:`ActionRecognizer`: the full encoder, bodies reduced by ``config.body_reduce``, then ``v_cls`` (a
  linear layer) on the pooled sequence features (``HiTRSConfig.feature_readout``).
- :class:`FrameDetector`: for every requested frame, the stride-1 clip centred on it goes through F-TRS +
  C-TRS, bodies reduced; a linear layer on it predicts ``K + 1`` classes (column 0 = background) with
  ``head="clip"`` (the paper's rule), a dilated temporal convolution over the clips around it with
  ``head="tcn"``, or one hidden layer over every few of them with ``head="context"``.
- :class:`MotionPredictor`: observed frames -> encoder -> a residual GRU decoder of the future frames that
  starts from the last observed pose and velocity.
"""

import importlib

# Each head's module is imported on first use of one of its names (PEP 562): a command imports its own head's
# module, so its runs do not depend on the other heads' code (training/results.py fingerprints what a run imports).
_MODULE_OF = {"DETECTION_HEADS": "detection", "FRAME_FEATURES": "detection", "FrameDetector": "detection",
              "MotionPredictor": "motion", "constant_velocity_baseline": "motion", "euclidean_loss": "motion",
              "smoothed_velocity": "motion", "ActionRecognizer": "recognition"}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
