"""Downstream evaluation: detection protocols and frame-to-segment post-processing, recognition /
retrieval / forecasting metrics, label subsets.

Pure numpy / torch, independent of the model. See ``docs/evaluation.md`` for the conventions.
"""

from hitrs_fast.eval.detection import PKU_NUM_CLASSES, THETAS_2D_AP, evaluate_detection
from hitrs_fast.eval.metrics import (
    MPJPEResult,
    fuse_scores,
    knn_accuracy,
    knn_predict,
    mpjpe,
    topk_accuracy,
    zero_velocity_baseline,
)
from hitrs_fast.eval.segments import (
    frame_probs_to_segments,
    frame_probs_to_segments_jhang2020,
    proposals_from_frame_probs,
)
from hitrs_fast.eval.subsets import (
    SEMI_SUPERVISED_FRACTIONS,
    class_balanced_subset,
    load_index_list,
    per_class_counts,
)

__all__ = [
    "MPJPEResult",
    "PKU_NUM_CLASSES",
    "SEMI_SUPERVISED_FRACTIONS",
    "THETAS_2D_AP",
    "class_balanced_subset",
    "evaluate_detection",
    "frame_probs_to_segments",
    "frame_probs_to_segments_jhang2020",
    "fuse_scores",
    "knn_accuracy",
    "knn_predict",
    "load_index_list",
    "mpjpe",
    "per_class_counts",
    "proposals_from_frame_probs",
    "topk_accuracy",
    "zero_velocity_baseline",
]
