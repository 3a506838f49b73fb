"""The command line's entry points: ``python -m ddif`` is the ``ddif`` script, ``--version``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ddif
from ddif.cli.main import COMMANDS, main

# the directory holding the imported ddif package: the subprocesses run the same code
_ROOT = str(Path(ddif.__file__).resolve().parents[1])


def _python_m_ddif(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "ddif", *args], check=False, capture_output=True, text=True,
                          env=env, cwd=_ROOT, timeout=300)


def test_python_m_ddif_version():
    run = _python_m_ddif("--version")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"ddif {ddif.__version__}"


def test_ddif_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ddif {ddif.__version__}"


def test_python_m_ddif_info_lists_presets():
    from ddif.config import preset_names

    run = _python_m_ddif("info")
    assert run.returncode == 0, run.stderr
    names = list(preset_names())
    assert names and all(f"\n| {name} |" in run.stdout for name in names), run.stdout


def test_python_m_ddif_without_a_command_prints_help_and_exits_2(capsys):
    run = _python_m_ddif()
    assert run.returncode == 2, run.stderr
    assert run.stdout.startswith("usage: ddif")
    # the same as the ddif script (ddif.cli.main:main) does
    assert main([]) == 2
    assert capsys.readouterr().out == run.stdout


def test_help_lists_every_sub_command():
    run = _python_m_ddif("--help")
    assert run.returncode == 0, run.stderr
    assert "--version" in run.stdout
    for name in list(COMMANDS) + ["station"]:
        assert f"\n    {name}" in run.stdout, (name, run.stdout)
