"""Temporal action detection with a Hi-TRS encoder: ``python training/detect.py [--help]``.

The task lives in ``hitrs_fast.training.detect``; see ``docs/downstream.md``.
"""

import sys

from hitrs_fast.training.detect import main

if __name__ == "__main__":
    sys.exit(main())
