"""`yoco publish`: a stored set as a Hugging Face dataset repo (docs/hub.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .common import JsonOpt, complete_set_refs, get_store, set_json


def register(app: typer.Typer) -> None:
    app.command("publish")(publish_cmd)


def publish_cmd(
    ref: Annotated[str, typer.Argument(help="The set to publish: a name, key prefix or file.",
                                       autocompletion=complete_set_refs, show_default=False)],
    target: Annotated[str | None, typer.Argument(help="hf:OWNER/NAME, the dataset repo to create or update.",
                                                 show_default=False)] = None,
    folder: Annotated[Path | None, typer.Option(
        "--folder", help="Write the repo's files into this new folder (no network); with hf:OWNER/NAME, "
                         "upload that folder afterwards.", show_default=False)] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Commit to this branch (created if new).",
                                                 show_default=False)] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    license_: Annotated[str, typer.Option("--license", help="The card's license identifier.")] = "mit",
    json_: JsonOpt = False,
) -> None:
    """Publish a set as a dataset repo that `datasets.load_dataset` reads as-is, with yoco's provenance.

    Writes parquet shards (PNG image + ClassLabel label), yoco/set.json, yoco/selection.json (kept indices
    and the scores that chose them) and a dataset card. Log in with `hf auth login` or HF_TOKEN.

    Examples: `yoco publish digits/random/ipc10@lbpe-easy-balanced-ipc1 hf:me/digits-yoco-ipc1`,
    `yoco publish SET --folder ./out` (files only, no network).
    """
    from ..stages import hub

    o = set_json(json_)
    pub = hub.publish(get_store(), ref, target, folder, private=private, revision=revision, create_pr=create_pr,
                      license_=license_, reporter=o)
    where = ", ".join(x for x in (pub.folder, pub.url) if x)
    o.info(f"published {pub.ref} ({len(pub.files)} files, pixels {pub.exact}) to {where}")
    rows = [["set", pub.ref], ["key", pub.key[:12]], ["repo", pub.repo or "-"], ["folder", pub.folder or "-"],
            ["url", pub.url or "-"], ["files", ", ".join(pub.files)]]
    o.data({"ref": pub.ref, "key": pub.key, "repo": pub.repo, "folder": pub.folder, "url": pub.url,
            "files": pub.files, "exact": pub.exact}, output.table(None, ["field", "value"], rows))
