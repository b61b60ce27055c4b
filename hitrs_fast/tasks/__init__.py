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

from hitrs_fast.tasks.detection import DETECTION_HEADS, FRAME_FEATURES, FrameDetector
from hitrs_fast.tasks.motion import MotionPredictor, constant_velocity_baseline, euclidean_loss, smoothed_velocity
from hitrs_fast.tasks.recognition import ActionRecognizer

__all__ = ["DETECTION_HEADS", "FRAME_FEATURES", "ActionRecognizer", "FrameDetector", "MotionPredictor",
           "constant_velocity_baseline", "euclidean_loss", "smoothed_velocity"]
