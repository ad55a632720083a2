"""The command line: help for every subcommand, one-line errors, exit codes."""

import subprocess
import sys

import pytest

from streamad.cli import _COMMANDS, main

SUBCOMMANDS = [name for name, _ in _COMMANDS]


def test_design_subcommands_exist():
    assert {"detect", "serve", "bench", "replay", "broker", "demo", "fed-server", "fed-client"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_help_for_every_subcommand(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"streamad {cmd}" in out and "usage" in out.lower()


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nonsense"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice" in err


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("streamad ")
