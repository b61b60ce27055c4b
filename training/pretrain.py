"""Hi-TRS pre-training: ``deepspeed training/pretrain.py [--help]``.

With no arguments: the ``tiny`` preset on the built-in synthetic motion set, then a
linear probe of the pre-trained encoder next to a random-init one.
"""

import sys

from hitrs_fast.training.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
