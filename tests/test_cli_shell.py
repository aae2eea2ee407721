"""The CLI shell: version, help without a terminal, one-line errors with exit codes."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def _typer_range():
    """pyproject.toml's typer requirement as a packaging SpecifierSet (e.g. >=0.26,<0.30)."""
    import tomllib
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(d).specifier for d in deps if Requirement(d).name == "typer")


def test_developed_on_typer_lies_in_the_allowed_range():
    """The whole suite runs on constraints.txt's typer: it must be one that pyproject.toml allows, and
    the range must have a cap (the CLI leans on TyperGroup's internals, which a minor release may move)."""
    pin = next(line.split("==")[1].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
               if line.startswith("typer=="))
    allowed = _typer_range()
    assert pin in allowed, (pin, str(allowed))
    assert any(s.operator == "<" for s in allowed) and any(s.operator == ">=" for s in allowed), str(allowed)


@pytest.mark.parametrize("end", ["lowest", "newest"])
def test_typer_range_ends_pass_the_shell_tests(tmp_path, end):
    """The lowest typer pyproject.toml allows and the newest release below its cap, each installed beside
    the project, pass this file's CLI tests (help for every command, one-line errors with their exit codes)
    and turn an unknown option into one line with exit 2: the error boundary must not depend on one typer's
    internals."""
    import os

    from packaging.version import Version

    allowed = _typer_range()
    lowest = next(s.version for s in allowed if s.operator == ">=")
    want = f"typer=={lowest}" if end == "lowest" else f"typer{allowed}"  # pip picks the newest allowed
    target = tmp_path / "site"
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                          "--target", str(target), want], capture_output=True, text=True, check=False)
    if got.returncode != 0:
        pytest.skip(f"{want} could not be installed here: {got.stderr.strip()[-200:]}")
    env = {**os.environ, "PYTHONPATH": str(target), "YOCO_HOME": str(tmp_path / "home")}
    version = subprocess.run([sys.executable, "-c", "import typer; print(typer.__version__)"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version in allowed and (end == "newest" or Version(version) == Version(lowest)), version
    r = subprocess.run([sys.executable, "-m", "yoco_cli", "prune", "--bogus"], env=env, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--bogus" in r.stderr and "Traceback" not in r.stderr
    shell = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                            "-k", "not typer_range", "-W", "ignore::pytest.PytestUnraisableExceptionWarning"],
                           env=env, capture_output=True, text=True, check=False, timeout=300)
    assert shell.returncode == 0, f"typer {version}:\n{shell.stdout[-3000:]}"
