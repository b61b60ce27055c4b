"""The JSON configs of ``hitrs_fast``, installed as the package ``hitrs_fast.configs``.

This folder holds the DeepSpeed configs (``*.json``) and, in ``downstream/``, the downstream recipes.
pyproject.toml maps it to ``hitrs_fast.configs`` (package data), so the library reads these files
through ``importlib.resources``: an editable install reads the copies here (edit them in place), an
installed wheel reads its own. Code lives in ``hitrs_fast.training.config_files``, not here.
"""
