"""The ``hitrs`` command (hitrs_fast.cli): its subcommands, their help under the ``hitrs <command>`` name,
unknown commands."""

from __future__ import annotations

import pytest

from hitrs_fast.cli import COMMANDS, main


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    assert "deepspeed --num_gpus N --module hitrs_fast.training.pretrain" in out
    assert main([]) == 2 and "usage: hitrs COMMAND" in capsys.readouterr().err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("hitrs-fast ")


def test_unknown_command_is_one_line(capsys):
    assert main(["pretrian"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("hitrs: error: unknown command 'pretrian'; commands: data, pretrain, recognize, detect, "
                   "predict-motion, convert-checkpoint")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_under_its_name(name, capsys):
    with pytest.raises(SystemExit) as ei:
        main([name, "--help"])
    assert ei.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: hitrs {name} ")
