"""Static completion scripts for bash, zsh and fish, committed under completions/.

The scripts are Typer's: each TAB runs `yoco` with `_YOCO_COMPLETE` set, and the app
answers with the candidates (commands, options, metric names, stored refs). That is why
`yoco` must start fast (no torch at import). Regenerate with `make completions`;
tests/test_completion.py fails when the committed files drift from this output.
"""
from __future__ import annotations

import sys
from pathlib import Path

PROG = "yoco"
VAR = "_YOCO_COMPLETE"
FILES = {"bash": "yoco.bash", "zsh": "_yoco", "fish": "yoco.fish"}


def script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=VAR, shell=shell).strip() + "\n"


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        path = folder / name
        path.write_text(script(shell), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions")):
        print(p)
