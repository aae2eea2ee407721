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


# -- completion as a person gets it: a real interactive shell on a pseudo-terminal, TAB typed --------------
PRUNED = ["digits/random/ipc10@lbpe-easy-balanced-ipc1", "digits/random/ipc10@lbpe-easy-balanced-ipc2",
          "digits/random/ipc10@random-hard-imbalanced-ipc1"]


@pytest.fixture
def pruned_refs(store):
    """A source set and three pruned sets' names (completion reads only the refs)."""
    store.set_ref("digits/random/ipc10", "condense", "0" * 64)
    for name in PRUNED:
        store.set_ref(name, "prune", "1" * 64)
    return PRUNED


class Terminal:
    """An interactive shell on a pty: `type` sends keys, `until` reads until a text shows (or fails)."""

    def __init__(self, argv: list[str], env: dict):
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: the shell
            os.execvpe(argv[0], argv, env)
        self.seen = ""

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def until(self, text: str, timeout: float = 30.0) -> str:
        import select
        import time

        deadline = time.monotonic() + timeout
        while text not in self.shown() and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:
                    break
        assert text in self.shown(), f"{text!r} never showed; the terminal shows:\n{self.shown()[-2000:]}"
        return self.shown()

    def shown(self) -> str:
        """What was written, with bells and escape sequences left out and backspaces applied."""
        import re

        out: list[str] = []
        for ch in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x07", "", self.seen):
            if ch == "\b":
                out = out[:-1]
            else:
                out.append(ch)
        return "".join(out)

    def fresh(self) -> None:
        """Clear the line (Ctrl-U) and forget what was shown."""
        self.type("\x15")
        self.seen = ""

    def close(self) -> None:
        import signal

        try:
            os.kill(self.pid, signal.SIGKILL)
        finally:
            os.waitpid(self.pid, 0)
            os.close(self.fd)


@pytest.fixture
def bash_tty(shell_env):
    env = {**shell_env, "TERM": "dumb", "PS1": "$ ", "INPUTRC": "/dev/null"}
    t = Terminal(["bash", "--norc", "--noprofile", "-i"], env)
    t.type(f"source '{COMPLETIONS / completion_scripts.FILES['bash']}'; echo sour''ced\n")
    t.until("sourced")
    t.seen = ""
    yield t
    t.close()


@needs["bash"]
def test_bash_completes_pruned_names_across_at_on_a_terminal(pruned_refs, bash_tty):
    bash_tty.type("yoco eval digits/random/ipc10@\t\t")  # two TABs: the list of candidates
    shown = bash_tty.until("random-hard-imbalanced-ipc1")
    for name in pruned_refs:  # bash lists the part after the source set's name
        assert name.split("ipc10", 1)[1] in shown
    bash_tty.fresh()
    bash_tty.type("yoco eval digits/random/ipc10@r\t")  # one candidate: the whole name on the line
    bash_tty.until("digits/random/ipc10@random-hard-imbalanced-ipc1 ")
    bash_tty.fresh()
    bash_tty.type("yoco show digits/random/ipc10@lbpe\t")  # the common part, the @ kept
    bash_tty.until("digits/random/ipc10@lbpe-easy-balanced-ipc")


@needs["bash"]
def test_bash_completes_folder_refs_across_colon_and_thread_counts(bash_tty, tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    bash_tty.type(f"yoco condense folder:{tmp_path}/ima\t")
    bash_tty.until(f"folder:{tmp_path}/images/")  # the colon survives, and no space after a folder
    bash_tty.type("c\t")
    bash_tty.until(f"folder:{tmp_path}/images/cat/")
    bash_tty.fresh()
    bash_tty.type("yoco --threads \t\t")
    shown = bash_tty.until("auto")
    assert "1" in shown.split("auto")[0] + shown.split("auto")[1]
    assert "pyproject.toml" not in shown  # values, not file names


@needs["bash"]
def test_bash_completes_prune_groups_for_eval(shell_env, store):
    store.set_ref("digits/idc/ipc10@lbpe-easy-balanced-ipc1", "prune-group", "2" * 64)
    store.set_ref("digits/idc/ipc10@lbpe-easy-balanced-ipc1-run0", "prune", "3" * 64)
    got = _bash(["yoco", "eval", "digits/idc/ipc10@lbpe"], shell_env)
    assert got == ["@lbpe-easy-balanced-ipc1", "@lbpe-easy-balanced-ipc1-run0"]  # from the @ on: what readline replaces


def test_option_values_complete(shell_env):
    from yoco_cli.cli import common

    assert common.complete_threads("")[0] == "auto" and "1" in common.complete_threads("")
    assert common.complete_device("cu") == ["cuda", "cuda:0"]
    assert common.complete_executor("") == ["auto", "serial", "local", "ray"]
    assert common.complete_folder("fol") == ["folder:"]
    assert common.complete_folder("digits") == []


@needs["bash"]
@pytest.mark.parametrize("words,expected", [
    (["yoco", "--threads", "a"], ["auto"]),
    (["yoco", "eval", "--batched", ""], ["auto", "on", "off"]),
    (["yoco", "report", "--format", "m"], ["markdown"]),
    (["yoco", "export", "x", "y", "--format", "d"], ["dream", "dsa"]),
    (["yoco", "prune", "--export-format", "k"], ["kip"]),
    (["yoco", "eval", "--executor", "r"], ["ray"]),
    (["yoco", "condense", "cifar1"], ["cifar10", "cifar100"]),
])
def test_bash_completes_enumerations(shell_env, words, expected):
    assert _bash(words, shell_env) == expected


@needs["zsh"]
def test_zsh_completes_pruned_names_across_at_on_a_terminal(pruned_refs, shell_env):
    env = {**shell_env, "TERM": "dumb", "PS1": "$ "}
    t = Terminal(["zsh", "-f", "-i"], env)
    try:
        t.type(f"autoload -U compinit && compinit -u -D && source '{COMPLETIONS / completion_scripts.FILES['zsh']}'"
               "; echo sour''ced\n")
        t.until("sourced")
        t.seen = ""
        t.type("yoco eval digits/random/ipc10@\t")
        shown = t.until(PRUNED[-1])
        assert all(name in shown for name in pruned_refs)
        t.fresh()
        t.type("yoco --threads \t")
        shown = t.until("auto")
        assert "pyproject.toml" not in shown
    finally:
        t.close()


@needs["fish"]
def test_fish_completes_pruned_names_and_values(pruned_refs, shell_env):
    assert _fish("yoco eval digits/random/ipc10@", shell_env) == pruned_refs
    got = _fish("yoco --threads ", shell_env)  # fish sorts them
    assert "auto" in got and "1" in got and not any(n.endswith(".toml") for n in got)
    assert sorted(_fish("yoco eval --compile ", shell_env)) == ["auto", "off", "on"]
