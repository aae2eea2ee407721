"""Shell completion: committed scripts match the app, and real shells complete through them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yoco_cli.cli import completion_scripts

ROOT = Path(__file__).resolve().parents[1]
COMPLETIONS = ROOT / "completions"


@pytest.mark.parametrize("shell", sorted(completion_scripts.FILES))
def test_committed_scripts_do_not_drift(shell):
    committed = (COMPLETIONS / completion_scripts.FILES[shell]).read_text(encoding="utf-8")
    assert committed == completion_scripts.script(shell), "run `make completions` and commit the result"


@pytest.fixture
def shell_env(yoco_home):
    """PATH with the `yoco` of this interpreter first, so the scripts call the code under test."""
    bindir = Path(sys.executable).parent
    if not (bindir / "yoco").exists():
        pytest.skip("the yoco console script is not installed next to this python")
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "YOCO_HOME": str(yoco_home)}


def _bash(words: list[str], env) -> list[str]:
    script = COMPLETIONS / completion_scripts.FILES["bash"]
    words_src = " ".join(f"'{w}'" for w in words)
    cmd = (f"source '{script}'; COMP_WORDS=({words_src}); COMP_CWORD={len(words) - 1}; "
           '_yoco_completion yoco; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=60, check=False)
    return [line for line in out.stdout.splitlines() if line]


def _fish(line: str, env) -> list[str]:
    script = COMPLETIONS / completion_scripts.FILES["fish"]
    out = subprocess.run(["fish", "-c", f"source '{script}'; complete -C '{line}'"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    return [row.split("\t")[0] for row in out.stdout.splitlines() if row]


def _zsh(words: list[str], env) -> str:
    """Run the real zsh completion function with `_arguments` captured instead of drawn."""
    script = COMPLETIONS / completion_scripts.FILES["zsh"]
    words_src = " ".join(f"'{w}'" for w in words)
    cmd = (f"compdef(){{ :; }}; _arguments(){{ print -r -- \"$@\"; }}; source '{script}'; "
           f"words=({words_src}); CURRENT={len(words)}; _yoco_completion")
    out = subprocess.run(["zsh", "-fc", cmd], capture_output=True, text=True, env=env, timeout=60, check=False)
    return out.stdout


needs = {sh: pytest.mark.skipif(shutil.which(sh) is None, reason=f"{sh} is not installed") for sh in ("bash", "zsh", "fish")}


@needs["bash"]
def test_bash_completes_commands(shell_env):
    assert "prune" in _bash(["yoco", "pr"], shell_env)
    assert "cache" in _bash(["yoco", "ca"], shell_env)


@needs["bash"]
def test_bash_completes_metric_names(shell_env):
    got = _bash(["yoco", "prune", "--metric", ""], shell_env)
    assert {"lbpe", "el2n", "forgetting", "aum"} <= set(got)
    assert _bash(["yoco", "prune", "--metric", "fo"], shell_env) == ["forgetting"]


@needs["bash"]
def test_bash_completes_stored_refs(shell_env, store):
    store.set_ref("digits/random/ipc10", "condense", "0" * 64)
    got = _bash(["yoco", "show", "digits/r"], shell_env)
    assert got == ["digits/random/ipc10"]


@needs["fish"]
def test_fish_completes(shell_env):
    assert "prune" in _fish("yoco pr", shell_env)
    assert "lbpe" in _fish("yoco prune --metric ", shell_env)


@needs["zsh"]
def test_zsh_completes(shell_env):
    assert '"prune"' in _zsh(["yoco", "pr"], shell_env)
    assert "lbpe" in _zsh(["yoco", "prune", "--metric", ""], shell_env)
