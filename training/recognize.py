"""Action recognition with a Hi-TRS encoder: ``python training/recognize.py [--help]``.

The task lives in ``hitrs_fast.training.recognize``; see ``docs/downstream.md``.
"""

import sys

from hitrs_fast.training.recognize import main

if __name__ == "__main__":
    sys.exit(main())
