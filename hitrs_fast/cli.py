"""The ``hitrs`` command (installed by ``pip install hitrs-fast[train]``): one subcommand per job, each the
``main(argv, prog)`` of its module, so ``hitrs recognize ARGS`` is ``python training/recognize.py ARGS``.

    hitrs data convert ntu --input nturgb+d_skeletons --output stores/ntu60
    hitrs pretrain --data stores/ntu60 --split ntu60_xsub_train --test-split ntu60_xsub_test
    hitrs recognize --data stores/ntu60 --split ntu60_xsub_train --test-split ntu60_xsub_test --init runs/pre
    hitrs convert-checkpoint pretrain_30000.pth --output released_encoder.pt

``hitrs pretrain`` runs one process on this machine; several GPUs or nodes use DeepSpeed's launcher on the
module: ``deepspeed --num_gpus 8 --module hitrs_fast.training.pretrain ARGS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hitrs_fast import __version__


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, exit 2,
    instead of the usage block and the message (its sub-command parsers are of this class too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


PROG = "hitrs"
# name -> (module with main(argv, prog), one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("hitrs_fast.data.__main__", "convert / import datasets into stores; describe, validate; synthetic sets"),
    "pretrain": ("hitrs_fast.training.pretrain", "pre-train Hi-TRS (DeepSpeed; one process here, see below for more)"),
    "recognize": ("hitrs_fast.training.recognize", "action recognition: linear, fine-tune, semi-supervised, k-NN, "
                  "fusion"),
    "detect": ("hitrs_fast.training.detect", "temporal action detection on sequences with per-frame labels"),
    "predict-motion": ("hitrs_fast.training.predict_motion", "motion prediction: observe 2 s, predict 400 ms"),
    "convert-checkpoint": ("hitrs_fast.training.convert_checkpoint", "a released Hi-TRS checkpoint -> an encoder.pt "
                           "for --init"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS]   ({PROG} COMMAND --help for the arguments of one command)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Several GPUs or nodes: deepspeed --num_gpus N --module hitrs_fast.training.pretrain ARGS",
              f"hitrs-fast {__version__}; docs: README.md and docs/ of the repository"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``hitrs COMMAND ARGS``; returns the command's exit status (2 for an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help"):
        print(usage())
        return 0
    if name == "--version":
        print(f"hitrs-fast {__version__}")
        return 0
    if name not in COMMANDS:
        print(f"{PROG}: error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest, prog=f"{PROG} {name}"))


if __name__ == "__main__":
    sys.exit(main())
