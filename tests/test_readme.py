"""The README's API example runs as written and its shape comments hold."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs_and_shapes_match():
    text = README.read_text()
    block = text.split("## API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)  # noqa: S102 - the repository's own example
    # Every "name  # [d0, d1, ...]" comment of the example, checked against the tensor it names.
    checked = 0
    for expr, dims in re.findall(r"^(\S[^#\n]*?)\s+#\s*\[([\d, ]+)\]", block, flags=re.M):
        name = expr.split("=")[0].strip()
        value = eval(name, scope)  # noqa: S307
        if isinstance(value, torch.Tensor):
            assert list(value.shape) == [int(d) for d in dims.split(",")], f"README: {name} {tuple(value.shape)}"
            checked += 1
    assert checked >= 5
