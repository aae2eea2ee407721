"""Every command is documented: help text with an example, and a section of the README."""
from __future__ import annotations

from pathlib import Path

import typer

from yoco_cli.cli.app import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands():
    group = typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        subs = getattr(cmd, "commands", None)
        if subs:
            for sub, subcmd in sorted(subs.items()):
                yield f"{name} {sub}", subcmd
        else:
            yield name, cmd


def test_every_command_is_in_the_readme():
    missing = [path for path, _ in _commands() if f"yoco {path}" not in README]
    assert not missing, f"document these in README.md: {missing}"


def test_every_command_has_help_with_an_example():
    lacking = [path for path, cmd in _commands()
               if not cmd.help or ("Example" not in cmd.help and "`yoco " not in cmd.help)]
    assert not lacking, f"give these commands help text with an example: {lacking}"


def test_readme_opens_with_the_two_commands():
    head = README.split("## ", 1)[0]
    assert "make demo" in head and "make test" in head


def _options_of(path: str) -> set[str]:
    group = typer.main.get_command(app)
    cmd = group
    for part in path.split():
        cmd = cmd.commands[part]
    opts = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]}
    return opts | {o for p in group.params for o in [*p.opts, *p.secondary_opts]}


def test_readme_usage_lines_name_only_real_options():
    """Every `--option` on a README line that runs a yoco command exists for that command (the old
    usage line `--metrics M ...` did not parse)."""
    import re

    commands = {path for path, _ in _commands()}
    checked, wrong = 0, []
    for block in re.findall(r"```(?:console|bash)?\n(.*?)```", README, flags=re.DOTALL):
        for line in re.sub(r"\n\s{6,}", " ", block).splitlines():  # usage lines continue indented
            line = line.split("#", 1)[0].lstrip("$ ").strip()
            m = re.match(r"yoco((?: --\S+(?: (?!--)\S+)?)*?) ((?:cache )?[a-z]+)\b(.*)", line)
            if not m or m.group(2) not in commands:
                continue
            names = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", m.group(1) + " " + m.group(3)))
            checked += 1
            wrong += [f"yoco {m.group(2)} {n}" for n in sorted(names - _options_of(m.group(2)))]
    assert checked >= 20, "the README's command lines were not found"
    assert not wrong, f"README names options that do not exist: {wrong}"


# -- docs/method.md: every section the code cites exists -------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
CITING = ["yoco_cli", "tests", "benchmarks", "docs", "README.md", "ARCHITECTURE.md"]
CITATION = "docs/method.md §"  # the one form; further sections on the same line may follow as ", §N.N"
SECTION_REF = r"§(\d+(?:\.\d+)*)"
# citations of the specification that is not in the repository: "spec 2.3", "Spec-5", "spec section 4",
# "spec P4", "spec §3", a bare pitfall id "P7", or the spec's file name
OLD_STYLE = (r"\b[Ss]pecs?(?:[ -]|\s+sections?\s+)(?:§\s*)?P?\d"
             r"|\bP\d{1,2}\b"
             r"|yoco-method\.md")


def method_sections(text: str) -> set[str]:
    """Section numbers of docs/method.md's numbered headings ("## 3 Scores", "### 3.2 LBPE ...")."""
    import re

    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*) ", text, flags=re.MULTILINE))


def citation_problems(texts: dict[str, str], sections: set[str]) -> tuple[list[str], int]:
    """(problems, citations seen) over {file name: text}: a cited section without a heading, a "§"
    on a line that does not say docs/method.md, or an old-style citation of the absent spec."""
    import re

    problems, seen = [], 0
    for name, text in texts.items():
        for no, line in enumerate(text.splitlines(), 1):
            where = f"{name}:{no}"
            problems += [f"{where}: old-style citation {m.group(0)!r}" for m in re.finditer(OLD_STYLE, line)]
            refs = re.findall(SECTION_REF, line)
            if refs and CITATION not in line:
                problems.append(f"{where}: cite as '{CITATION}N.N', not a bare '§{refs[0]}'")
                continue
            seen += len(refs)
            problems += [f"{where}: cites {CITATION}{r}, which has no heading there" for r in refs if r not in sections]
    return problems, seen


def _citing_texts() -> dict[str, str]:
    out = {}
    for top in CITING:
        path = ROOT / top
        files = [path] if path.is_file() else sorted([*path.rglob("*.py"), *path.rglob("*.md")])
        for f in files:
            if f in (METHOD, Path(__file__).resolve()):
                continue
            out[str(f.relative_to(ROOT))] = f.read_text(encoding="utf-8")
    return out


def test_every_cited_method_section_exists():
    import re

    text = METHOD.read_text(encoding="utf-8")
    sections = method_sections(text)
    assert {"0", "2.3", "3.2", "4.5", "5.2", "9.4", "9.19"} <= sections, "docs/method.md lost its numbering"
    problems, seen = citation_problems(_citing_texts(), sections)
    assert seen >= 100, f"only {seen} citations of docs/method.md found: is the scan broken?"
    assert not problems, "\n".join(problems)
    inner = [r for r in re.findall(SECTION_REF, text) if r not in sections]
    assert not inner, f"docs/method.md refers to sections it does not have: {inner}"


def test_the_citation_check_catches_what_it_should():
    sections = {"3", "3.2", "9.7"}
    texts = {"a.py": "# LBPE (docs/method.md §3.2, §3)\n# CCS (docs/method.md §3.8)\n",
             "b.py": "# ties (spec 4.6) and (P7)\n# strata (§9.7)\n",
             "c.md": "Pruning keeps decoded images (docs/method.md §9.7); P-values are not pitfalls.\n"}
    problems, seen = citation_problems(texts, sections)
    assert seen == 4
    assert problems == ["a.py:2: cites docs/method.md §3.8, which has no heading there",
                        "b.py:1: old-style citation 'spec 4'", "b.py:1: old-style citation 'P7'",
                        "b.py:2: cite as 'docs/method.md §N.N', not a bare '§9.7'"]
