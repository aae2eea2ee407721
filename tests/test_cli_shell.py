"""The CLI shell: version, help without a terminal, one-line errors with exit codes."""
import subprocess
import sys


def test_version(cli):
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("yoco ")


def test_help_renders_for_every_command(cli):
    import typer

    from yoco_cli.cli.app import app

    group = typer.main.get_command(app)
    assert cli("--help").exit_code == 0
    for name, cmd in group.commands.items():
        assert cli(name, "--help").exit_code == 0, name
        for sub in getattr(cmd, "commands", {}):
            assert cli(name, sub, "--help").exit_code == 0, (name, sub)


def test_unknown_ref_is_one_line_exit_2(cli):
    r = cli("cache", "info", "nope")
    assert r.exit_code == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_unwritable_home_exit_2(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("--home", blocker / "sub", "cache", "ls")
    assert r.exit_code == 2 and "not writable" in r.stderr


def test_cli_import_does_not_load_torch():
    code = "import sys, yoco_cli.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "yoco_cli", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "yoco" in out.stdout


def test_lowest_allowed_typer_gives_one_line_usage_errors(tmp_path):
    """pyproject.toml's lowest typer, installed beside the project, still turns an unknown option
    into one line with exit 2 (the error boundary must not depend on a newer typer's internals)."""
    import os
    import re
    from pathlib import Path

    import pytest
    import tomllib

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    lowest = next(re.search(r">=\s*([\d.]+)", d).group(1) for d in deps["dependencies"] if d.startswith("typer"))
    target = tmp_path / "site"
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                          "--target", str(target), f"typer=={lowest}"], capture_output=True, text=True, check=False)
    if got.returncode != 0:
        pytest.skip(f"typer {lowest} could not be installed here: {got.stderr.strip()[-200:]}")
    env = {**os.environ, "PYTHONPATH": str(target), "YOCO_HOME": str(tmp_path / "home")}
    check = subprocess.run([sys.executable, "-c", "import typer; print(typer.__version__)"], env=env,
                           capture_output=True, text=True, check=False)
    assert check.stdout.strip().startswith(lowest)
    r = subprocess.run([sys.executable, "-m", "yoco_cli", "prune", "--bogus"], env=env, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--bogus" in r.stderr and "Traceback" not in r.stderr
