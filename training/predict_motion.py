"""Motion prediction with a Hi-TRS encoder: ``python training/predict_motion.py [--help]``.

The task lives in ``hitrs_fast.training.predict_motion``; see ``docs/downstream.md``.
"""

import sys

from hitrs_fast.training.predict_motion import main

if __name__ == "__main__":
    sys.exit(main())
