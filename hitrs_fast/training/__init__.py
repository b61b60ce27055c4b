"""Training: DeepSpeed pre-training and the downstream tasks, each with ``main(argv, prog)``, the
subcommands of the ``hitrs`` command (:mod:`hitrs_fast.cli`).

- ``pretrain``: Hi-TRS pre-training (``hitrs pretrain``), with ``checkpoint`` and ``probe``;
- ``recognize``, ``detect``, ``predict_motion``: the downstream tasks (``hitrs recognize`` ...);
- ``convert_checkpoint``: a released Hi-TRS checkpoint as an ``encoder.pt`` (``hitrs convert-checkpoint``);
- their shared run: ``task_run`` (arguments, prologue, epilogue), ``recipes``, ``encoder`` (build / load the
  encoder), ``loop`` (epoch loop with resumable checkpoints);
- ``run`` (overrides, seeds, atomic writes, metrics logger), ``optim`` (parameter groups, schedules) and
  ``config_files`` (the packaged DeepSpeed configs and recipes) serve both.

Only this package imports DeepSpeed, and only inside the functions that need it.
"""
