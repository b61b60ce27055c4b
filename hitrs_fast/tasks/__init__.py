"""Downstream heads on the Hi-TRS encoder. Each goes through the encoder's one API (``HiTRS.prepare``,
``encode_frames``, ``encode_clips`` / ``encode_clip_positions``, ``encode_video`` or ``HiTRS.forward``).

- :class:`ActionRecognizer`: the full encoder, bodies reduced by ``config.body_reduce``, then ``v_cls`` (a
  linear layer) on the pooled sequence features (``HiTRSConfig.feature_readout``).
- :class:`FrameDetector`: for every requested frame, the stride-1 clip centred on it goes through F-TRS +
  C-TRS (``head="clip"``, the paper's rule), or the stride-1 clips around it go through V-TRS as well
  (``head="context"``); bodies are reduced and a linear layer predicts ``K + 1`` classes (column 0 =
  background).
- :class:`MotionPredictor`: observed frames -> encoder -> a residual GRU decoder of the future frames that
  starts from the last observed pose and velocity.
"""

from hitrs_fast.tasks.detection import DETECTION_HEADS, FrameDetector
from hitrs_fast.tasks.motion import MotionPredictor, constant_velocity_baseline, euclidean_loss, smoothed_velocity
from hitrs_fast.tasks.recognition import ActionRecognizer

__all__ = ["DETECTION_HEADS", "ActionRecognizer", "FrameDetector", "MotionPredictor", "constant_velocity_baseline",
           "euclidean_loss", "smoothed_velocity"]
