"""Downstream heads on the Hi-TRS encoder. Each goes through the encoder's one API (``HiTRS.prepare``,
``encode_frames``, ``encode_clips`` / ``encode_clip_positions``, ``encode_video`` or ``HiTRS.forward``).

- :class:`ActionRecognizer`: the full encoder, bodies reduced by ``config.body_reduce``, then ``v_cls`` (a
  linear layer) on the pooled sequence features (``HiTRSConfig.feature_readout``).
- :class:`FrameDetector`: for every requested frame, the stride-1 clip centred on it goes through F-TRS +
  C-TRS; the C-TRS CLS of each body is reduced over bodies and a linear layer predicts ``K + 1`` classes
  (column 0 = background).
- :class:`MotionPredictor`: observed frames -> encoder -> a GRU decoder of the future frames.
"""

from hitrs_fast.tasks.detection import FrameDetector, clip_context
from hitrs_fast.tasks.motion import MotionPredictor, euclidean_loss
from hitrs_fast.tasks.recognition import ActionRecognizer

__all__ = ["ActionRecognizer", "FrameDetector", "MotionPredictor", "clip_context", "euclidean_loss"]
