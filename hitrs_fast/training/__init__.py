"""Training: DeepSpeed pre-training and the downstream tasks, each with ``main(argv)``.

- ``pretrain``: Hi-TRS pre-training (``deepspeed training/pretrain.py``), with ``checkpoint`` and ``probe``;
- ``recognize``, ``detect``, ``predict_motion``: the downstream tasks (``python training/<task>.py``);
- their shared run: ``task_run`` (arguments, prologue, epilogue), ``recipes``, ``encoder`` (build / load the
  encoder), ``loop`` (epoch loop with resumable checkpoints);
- ``run`` (overrides, seeds, atomic writes, metrics logger), ``optim`` (parameter groups, schedules) and
  ``config_files`` (the packaged DeepSpeed configs and recipes) serve both.

Only this package imports DeepSpeed, and only inside the functions that need it.
"""
