"""`yoco score`: every score of a set's training dynamics, cached as one artifact, with a summary."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import UsageError
from . import output
from .common import DeviceOpt, JsonOpt, check_seed, complete_refs, get_store, set_json

SCORE_PANEL = "Score options"
DYN_PANEL = "Dynamics (computed with the preset when missing)"

# Shared with `yoco prune`, which computes missing scores on the way.
KOpt = Annotated[int | None, typer.Option(
    "--k", help="LBPE: number of top-accuracy epochs (default: the setting's preset, 10 or 3).",
    rich_help_panel=SCORE_PANEL, show_default=False)]
StopOpt = Annotated[int | None, typer.Option(
    "--stop-epoch", help="LBPE: choose epochs in [0, STOP) (default: the setting's preset, e.g. 100 for "
                         "IDC CIFAR-10, scaled to shorter dynamics).", rich_help_panel=SCORE_PANEL,
    show_default=False)]
UseLossOpt = Annotated[bool, typer.Option(
    "--use-loss", help="LBPE: take the K epochs of smallest training loss instead of highest accuracy.",
    rich_help_panel=SCORE_PANEL)]
WindowOpt = Annotated[str, typer.Option(
    "--el2n-window", help="EL2N (and CCS): epochs START:END summed.", rich_help_panel=SCORE_PANEL)]
NeverOpt = Annotated[str, typer.Option(
    "--never-learned", help="Forgetting of never-learned samples: zero (reference) or max (Toneva et al.: "
                            "max + 1, i.e. hardest).", rich_help_panel=SCORE_PANEL)]
AumMeanOpt = Annotated[bool, typer.Option(
    "--aum-mean", help="AUM: average over epochs (Pleiss et al.) instead of the sum; same ranking.",
    rich_help_panel=SCORE_PANEL)]
EpochsOpt = Annotated[int | None, typer.Option(
    "--dynamics-epochs", help="When dynamics must be computed: epochs (default: the preset).",
    rich_help_panel=DYN_PANEL, show_default=False)]
SeedsOpt = Annotated[int | None, typer.Option(
    "--dynamics-seeds", help="When dynamics must be computed: number of runs (default: the preset's 3).",
    rich_help_panel=DYN_PANEL, show_default=False)]


def register(app: typer.Typer) -> None:
    app.command("score")(score_cmd)


def parse_window(text: str) -> tuple[int, int]:
    try:
        a, b = (int(p) for p in text.split(":"))
    except ValueError:
        raise UsageError(f"--el2n-window {text!r} is not START:END", "e.g. --el2n-window 0:10") from None
    if not 0 <= a < b:
        raise UsageError(f"--el2n-window {text}: need 0 <= START < END")
    return a, b


def score_options(k, stop_epoch, use_loss, el2n_window, never_learned, aum_mean, seed):
    from ..methods.scores import ScoreOptions

    if never_learned not in ("zero", "max"):
        raise UsageError(f"--never-learned {never_learned!r}", "use zero or max")
    return ScoreOptions(k=k, stop_epoch=stop_epoch, use_loss=use_loss, el2n_window=parse_window(el2n_window),
                        never_learned=never_learned, aum_mean=aum_mean, seed=seed)


def resolve_target(store, spec: str):
    """A dynamics artifact or a condensed set (ref, key or path) -> (dyn manifest or None, set manifest, set)."""
    from ..stages.importing import resolve_set
    from ..stages.score import find_set
    from ..stages.sets import is_set, load_set

    path = Path(spec)
    if path.exists() and not store.ref_path(spec).exists():
        m, cset = resolve_set(store, spec)
        return None, m, cset
    m = store.resolve(spec, what="dynamics artifact or condensed set")
    if is_set(m):
        return None, m, load_set(store, m)
    if m.stage != "dynamics":
        raise UsageError(f"{spec} is a {m.stage} artifact", "give a dynamics artifact or a condensed set")
    digests = set(m.inputs.values())
    set_m = next((s for d in sorted(digests) if (s := find_set(store, d)) is not None), None)
    if set_m is None:
        raise UsageError(f"the set the dynamics {spec} were recorded on is not in the store",
                         "import or fetch that set again")
    return m, set_m, load_set(store, set_m)


def summary_table(m) -> tuple[dict, Table]:
    from ..stages.score import metric_order

    stats = dict(sorted(m.meta.get("stats", {}).items(), key=lambda kv: metric_order(kv[0])))
    rows = [[name, s["min"], s["max"], s["mean"], "" if s["spearman_lbpe"] is None else round(s["spearman_lbpe"], 3)]
            for name, s in stats.items()]
    return stats, output.table(None, ["metric", "min", "max", "mean", "Spearman vs LBPE"], rows)


def score_cmd(
    target: Annotated[str | None, typer.Argument(
        metavar="TARGET", help="A dynamics artifact, or a condensed set (its dynamics are computed with the "
                               "preset if missing).", autocompletion=complete_refs, show_default=False)] = None,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", help="Read a reference score pickle (data-score-ipc10-ep100.pickle) instead; no code in it runs.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name for scores read with --from-file (default: reference/<file stem>).",
        show_default=False)] = None,
    k: KOpt = None,
    stop_epoch: StopOpt = None,
    use_loss: UseLossOpt = False,
    el2n_window: WindowOpt = "0:10",
    never_learned: NeverOpt = "zero",
    aum_mean: AumMeanOpt = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random score.", callback=check_seed)] = 0,
    dynamics_epochs: EpochsOpt = None,
    dynamics_seeds: SeedsOpt = None,
    export: Annotated[Path | None, typer.Option(
        "--export", help="Also write the scores of each dynamics run: FILE.pickle in the reference's data-score "
                         "layout (for its test.py), FILE.json as {metric: [score per decoded index]}. Several runs: "
                         "{run} in the name is replaced (else -runJ is added).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
) -> None:
    """Compute every score (lbpe, el2n, forgetting, aum, entropy, loss, random) into one cached artifact.

    Prints per metric the range, the mean and the rank correlation with LBPE (averaged over dynamics runs).
    Examples: `yoco score digits/idc/ipc10`, `yoco score --from-file data-score-ipc10-ep100.pickle`,
    `yoco score digits/idc/ipc10 --export data-score-ipc10.pickle`
    """
    o = set_json(json_)
    store = get_store()
    if export is not None:  # a bad destination fails now, not after the dynamics have trained
        from ..files import check_output_file
        from ..stages.score import export_format

        export_format(export)
        check_output_file(export)
    if from_file is not None:
        if target:
            raise UsageError("give either a TARGET or --from-file, not both")
        from ..stages.score import from_file as read_file

        m, cached = read_file(store, from_file, name=name, seed=seed)
        ref = store.refs_to(m.stage, m.key)
    else:
        if not target:
            raise UsageError("name the dynamics or condensed set to score",
                             "e.g. `yoco score idc/cifar10/ipc10`, or `--from-file data-score-….pickle`")
        opts = score_options(k, stop_epoch, use_loss, el2n_window, never_learned, aum_mean, seed)
        dyn_m, set_m, cset = resolve_target(store, target)
        from ..stages import training
        from ..stages.score import scores_for_set

        # SET@scores names these scores when they come from the dynamics SET@dynamics names
        m, cached, dyn_m = scores_for_set(store, set_m, cset, opts, dyn_m=dyn_m, device=device, reporter=o,
                                          dynamics=training.overrides(epochs=dynamics_epochs, seeds=dynamics_seeds))
        ref = store.refs_to(m.stage, m.key)
    stats, tbl = summary_table(m)
    info = m.meta.get("info", {})
    _say_lbpe(o, info.get("lbpe") or [])
    o.info(f"scores {ref[0] if ref else m.short} ({m.short}, {m.meta.get('runs', 1)} run(s))"
           + (" [cached]" if cached else ""))
    written = []
    if export is not None:
        from ..stages.score import export_scores

        for path in export_scores(store, m, export, device=device).values():
            o.info(f"wrote {path}")
            written.append(str(path))
    o.data({"ref": ref[0] if ref else None, "key": m.key, "cached": cached, "runs": m.meta.get("runs"),
            "metrics": stats, "info": info, "ssp_lists": m.meta.get("ssp_lists", []), "exported": written}, tbl)


def _say_lbpe(o, infos: list[dict]) -> None:
    """The LBPE window (K < stop, scaled or not) and, once each, the warnings about it."""
    from ..methods.scores import describe_lbpe

    if not infos or infos[0].get("epochs") is None:
        return
    o.info(describe_lbpe(infos[0]) + f"; run 0 chose epochs {infos[0].get('epochs')}")
    seen = []
    for info in infos:
        for w in info.get("warnings", []):
            if w not in seen:
                seen.append(w)
                o.warn(w)
