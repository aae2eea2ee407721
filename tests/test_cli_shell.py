"""The CLI shell: version, help without a terminal, one-line errors with exit codes."""
import subprocess
import sys


def test_version(cli):
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("yoco ")


def test_help_renders_for_every_command(cli):
    from yoco_cli.cli.app import app
    import typer

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
    out = subprocess.run([sys.executable, "-m", "yoco_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "yoco" in out.stdout
