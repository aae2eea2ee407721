"""`yoco prune`: a condensed set -> smaller IPCs, by one of the paper's rules (YOCO = LBPE, easy, balanced)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..data.formats import FORMATS, export_help
from ..errors import UsageError
from . import output
from .cmd_score import (
    AumMeanOpt,
    EpochsOpt,
    KOpt,
    NeverOpt,
    SeedsOpt,
    StopOpt,
    UseLossOpt,
    WindowOpt,
    score_options,
)
from .common import (
    DeviceOpt,
    JsonOpt,
    MultiTargetCommand,
    check_seed,
    complete_choices,
    complete_metrics,
    complete_refs,
    complete_set_refs,
    get_store,
    interactive,
    metric_help,
    parse_targets,
    prompt_choice,
    prompt_targets,
    set_json,
)

RULE_PANEL = "Rule"
CCS_PANEL = "CCS"
SSP_PANEL = "SSP (k-means prototypes)"
OUT_PANEL = "Output"


def register(app: typer.Typer) -> None:
    app.command("prune", cls=MultiTargetCommand)(prune_cmd)


# -- which set ---------------------------------------------------------------------------------------
def choose_set(store, spec: str | None, ipc_from: int | None, dataset: str | None):
    from ..stages.importing import resolve_set
    from ..stages.sets import all_sets, load_set, set_label

    if spec:
        m, cset = resolve_set(store, spec)
        if ipc_from is not None and cset.ipc != ipc_from:
            raise UsageError(f"{spec} has IPC {cset.ipc}, not --from {ipc_from}", f"use --from {cset.ipc} or another set")
        if dataset and cset.dataset != dataset:
            raise UsageError(f"{spec} is a {cset.dataset} set, not {dataset}")
        return m, cset
    cands = [m for m in all_sets(store)
             if (ipc_from is None or m.meta["set"].get("ipc") == ipc_from)
             and (not dataset or m.meta["set"].get("dataset") == dataset)]
    what = f"IPC {ipc_from}" if ipc_from is not None else "any IPC"
    what += f" {dataset}" if dataset else ""
    if not cands:
        ds = dataset or "cifar10"
        raise UsageError(f"no stored condensed set with {what}",
                         f"get one with `yoco fetch idc {ds}` or `yoco condense {dataset or 'digits'} --ipc "
                         f"{ipc_from or 10}`")
    labels = [set_label(store, m) for m in cands]
    if len(cands) == 1:
        return cands[0], load_set(store, cands[0])
    if not interactive():
        raise UsageError(f"{len(cands)} stored sets have {what}: {', '.join(labels)}",
                         "name one as the first argument, or narrow with --dataset")
    i = prompt_choice("which set", labels, [m.meta.get("summary", "") for m in cands])
    return cands[i], load_set(store, cands[i])


def choose_rule(metric: str | None, key: str | None, hard: bool | None, balanced: bool | None):
    from ..methods import scores, select

    if key:
        if metric or hard is not None or balanced is not None:
            raise UsageError("--key already sets the metric, direction and balance",
                             "use either --key or --metric/--easy/--hard/--balanced/--imbalanced")
        return select.parse_key(key)
    rule = select.rule_for(metric or "lbpe", hard, balanced)
    o = output.get()
    declared = scores.get(rule.metric)
    if hard is not None and not declared.directed:
        o.warn(f"--{'hard' if hard else 'easy'} has no effect on {rule.metric}")
    if balanced and declared.fixed_balance:
        o.warn(f"{rule.metric} decides the balance itself (as the reference does); --balanced is ignored")
    return rule


# -- the command ---------------------------------------------------------------------------------------
def prune_cmd(
    set_spec: Annotated[str | None, typer.Argument(
        metavar="SET", help="A stored set (name or key prefix) or a set file; default: the stored set with "
                              "IPC --from.", autocompletion=complete_set_refs, show_default=False)] = None,
    ipc_from: Annotated[int | None, typer.Option(
        "--from", help="IPC of the set to prune (picks the stored set when SET is not given).",
        show_default=False)] = None,
    to: Annotated[list[str] | None, typer.Option(
        "--to", metavar="IPC", help="Target IPC(s): --to 1, --to 1 2 5 or --to 1,2,5.", show_default=False)] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", "-m", help=metric_help(),
        autocompletion=complete_metrics, rich_help_panel=RULE_PANEL, show_default=False)] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="The reference's pruning key instead: yoco, forgetting_easy_balance, accumulated_margin, "
                      "ccs, random_balance, ssp_balance, ...", rich_help_panel=RULE_PANEL, show_default=False)] = None,
    hard: Annotated[bool | None, typer.Option(
        "--hard/--easy", help="Keep the hardest or the easiest samples (default: easy for lbpe, hard otherwise).",
        rich_help_panel=RULE_PANEL, show_default=False)] = None,
    balanced: Annotated[bool | None, typer.Option(
        "--balanced/--imbalanced", help="Same count per class (YOCO's rule 2) or over the whole set "
                                        "(default: balanced for lbpe, imbalanced otherwise).",
        rich_help_panel=RULE_PANEL, show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Only consider stored sets of this dataset.", show_default=False)] = None,
    dynamics: Annotated[str | None, typer.Option(
        "--dynamics", help="Use this stored dynamics artifact (default: the set's, computed if missing).",
        autocompletion=complete_refs, show_default=False)] = None,
    scores: Annotated[str | None, typer.Option(
        "--scores", help="Use this stored score artifact (e.g. one read with `yoco score --from-file`).",
        autocompletion=complete_refs, show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of random, CCS's random mode and k-means.", callback=check_seed)] = 0,
    score_run: Annotated[int | None, typer.Option(
        "--score-run", help="Prune only with dynamics run I's own scores (one set, <name>-runI) instead of once per "
                            "run.", rich_help_panel=RULE_PANEL, show_default=False)] = None,
    mean_scores: Annotated[bool, typer.Option(
        "--mean-scores", help="Prune once with the scores averaged over the dynamics runs (named "
                              "<set>@<rule>-meanscores-ipcN) instead of the paper's protocol: once per run with its "
                              "own scores, accuracies pooled over the runs.", rich_help_panel=RULE_PANEL)] = False,
    k: KOpt = None,
    stop_epoch: StopOpt = None,
    use_loss: UseLossOpt = False,
    el2n_window: WindowOpt = "0:10",
    never_learned: NeverOpt = "zero",
    aum_mean: AumMeanOpt = False,
    ccs_beta: Annotated[float | None, typer.Option(
        "--ccs-beta", help="Fraction of the hardest samples CCS drops first (default: the reference's table).",
        rich_help_panel=CCS_PANEL, show_default=False)] = None,
    ccs_strata: Annotated[int, typer.Option("--ccs-strata", help="Number of strata.", rich_help_panel=CCS_PANEL)] = 50,
    ccs_random: Annotated[bool, typer.Option(
        "--ccs-random", help="Sample uniformly within strata (CCS paper) instead of the reference's first-in-order "
                             "(the hardest).", rich_help_panel=CCS_PANEL)] = False,
    ssp_duplicates: Annotated[str, typer.Option(
        "--ssp-duplicates", help="fill: a centroid whose nearest sample is taken gets its nearest unused one "
                                 "(exact counts); keep: the reference's list with repeats.",
        rich_help_panel=SSP_PANEL)] = "fill",
    ssp_run: Annotated[int, typer.Option(
        "--ssp-run", help="Whose final model gives the features.", rich_help_panel=SSP_PANEL)] = 0,
    dynamics_epochs: EpochsOpt = None,
    dynamics_seeds: SeedsOpt = None,
    export: Annotated[Path | None, typer.Option(
        "--export", help="Also write the pruned set as IDC's data.pt (\\[data, targets], torch.save). With several "
                         "--to, {to} in the name is replaced (else -ipcN is added).",
        rich_help_panel=OUT_PANEL, show_default=False)] = None,
    export_format: Annotated[str, typer.Option(
        "--export-format", help="Layout for --export: " + export_help(),
        rich_help_panel=OUT_PANEL, autocompletion=complete_choices(*FORMATS))] = "idc",
    indices: Annotated[Path | None, typer.Option(
        "--indices", help='Also write {"indices": \\[kept decoded indices], "stored": \\[their stored images]} as JSON.',
        rich_help_panel=OUT_PANEL, show_default=False)] = None,
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
) -> None:
    """Prune a condensed set to smaller IPCs; each result is stored as <set>@<rule>-ipc<to>.

    As in the paper, with several dynamics runs each run prunes with its own scores: the sets
    are <set>@<rule>-ipc<to>-run<j>, and <set>@<rule>-ipc<to> names them all (eval pools them).
    Missing dynamics and scores are computed on the way (with the preset) and cached.
    Examples: `yoco prune --from 10 --to 1 --metric lbpe --balanced`,
    `yoco prune idc/cifar10/ipc10 --to 1 2 5 --key forgetting_easy_balance`
    """
    from ..stages import prune as prune_stage
    from ..stages import training

    o = set_json(json_)
    store = get_store()
    rule = choose_rule(metric, key, hard, balanced)
    popts = prune_stage.PruneOptions(seed=seed, score_run=score_run, ccs_beta=ccs_beta, ccs_strata=ccs_strata,
                                     ccs_random=ccs_random, ssp_duplicates=ssp_duplicates, ssp_run=ssp_run,
                                     device=device)
    popts.check()
    # the score artifact's own random column stays at seed 0: --seed steers selections, not the scores cache
    sopts = score_options(k, stop_epoch, use_loss, el2n_window, never_learned, aum_mean, 0)
    set_m, cset = choose_set(store, set_spec, ipc_from, dataset)
    if to:
        targets = parse_targets(to)
    elif interactive():
        targets = prompt_targets(cset.ipc)
    else:
        raise UsageError("give the target IPC(s) with --to", f"e.g. --to 1 or --to 1 2 5 (below {cset.ipc})")
    req = prune_stage.PruneRequest(rule, targets, popts, sopts, scores_ref=scores, dynamics_ref=dynamics,
                                   dynamics=training.overrides(epochs=dynamics_epochs, seeds=dynamics_seeds),
                                   mean_scores=mean_scores)
    prune_stage.check(cset, req)
    _check_destinations(cset, targets, export, export_format, indices)
    pruned = prune_stage.run(store, set_m, cset, req, reporter=o)
    _report(o, [_outputs(o, store, p, t, targets, export, export_format, indices) for t, p in zip(targets, pruned)],
            cset)


def _check_destinations(cset, targets, export, export_format, indices) -> None:
    """--export/--indices that cannot be written fail now, not after the dynamics have trained."""
    from ..data.formats import check_export
    from ..stages import prune as prune_stage

    if export is not None:
        fmt = check_export(export_format, cset.value_space)
        for t in targets:
            prune_stage.check_output_file(_target_path(export, t, len(targets) > 1), folder=fmt == "mtt")
    if indices is not None:
        for t in targets:
            prune_stage.check_output_file(_target_path(indices, t, len(targets) > 1))


def _target_path(path: Path, t: int, several: bool, run: int | None = None) -> Path:
    """{to} and {run} in the name are replaced; else -ipcN (several targets) and -runJ (several runs) are added."""
    name = path.name
    if "{to}" in name:
        name, several = name.replace("{to}", str(t)), False
    if "{run}" in name:
        name, run = name.replace("{run}", str(run or 0)), None
    stem, suffix = Path(name).stem, Path(name).suffix
    stem += f"-ipc{t}" if several else ""
    stem += f"-run{run}" if run is not None else ""
    return path.with_name(stem + suffix)


def _outputs(o, store, pruned, t, targets, export, export_format, indices) -> dict:
    """One target's result: the name to use, and per pruned set (one per run) its files."""
    from ..stages import prune as prune_stage

    several = len(targets) > 1
    runs = []
    for j, m in enumerate(pruned.sets):
        refs = store.refs_to(m.stage, m.key)
        run = j if pruned.runs > 1 else None
        entry = {"ref": refs[0] if refs else None, "key": m.key, "per_class": m.meta.get("per_class"),
                 "score_range": m.meta.get("score_range"), "score_run": (m.meta.get("pruned") or {}).get("score_run")}
        if export is not None:
            path = _target_path(export, t, several, run)
            for note in prune_stage.export(store, m, path, export_format):
                o.info(f"note: {note}")
            entry["export"] = str(path)
        if indices is not None:
            path = _target_path(indices, t, several, run)
            prune_stage.write_indices(store, m, path)
            entry["indices"] = str(path)
        runs.append(entry)
    first = pruned.sets[0].meta
    doc = {"ref": pruned.ref, "key": pruned.manifest.key, "cached": pruned.cached, "to": t,
           "protocol": pruned.protocol, "kept": first.get("kept"), "total": first.get("total"),
           "per_class": first.get("per_class"), "score_range": _merged_range([r["score_range"] for r in runs]),
           "rule": first.get("pruned"), "runs": runs}
    for name in ("export", "indices"):
        if len(runs) == 1 and name in runs[0]:
            doc[name] = runs[0][name]
    return doc


def _merged_range(ranges: list) -> dict | None:
    """The score ranges of several runs' sets as one: lowest low, highest high (None without scores)."""
    ranges = [r for r in ranges if r]
    if not ranges:
        return None
    out = {}
    for part in ("kept", "dropped"):
        vals = [r[part] for r in ranges if r.get(part)]
        out[part] = [min(v[0] for v in vals), max(v[1] for v in vals)] if vals else None
    return out


def _per_class(counts: list[int]) -> str:
    if not counts:
        return ""
    if len(set(counts)) == 1:
        return f"{counts[0]} each"
    if len(counts) <= 12:
        return " ".join(str(c) for c in counts)
    return f"{min(counts)}..{max(counts)} (see --json)"


def _range(r) -> str:
    return "" if not r else f"{r[0]:.4g} .. {r[1]:.4g}"


def _report(o, results: list[dict], cset) -> None:
    rows = []
    for r in results:
        sr = r["score_range"] or {}
        kept = f"{r['kept']} / {r['total']}" + (f" x{len(r['runs'])} runs" if len(r["runs"]) > 1 else "")
        rows.append([r["ref"] or r["key"][:12], kept, _per_class(r["per_class"] or []),
                     _range(sr.get("kept")), _range(sr.get("dropped")), "yes" if r["cached"] else "no"])
    tbl = output.table(f"IPC {cset.ipc} -> {', '.join(str(r['to']) for r in results)} (decoded images)",
                       ["pruned set", "kept", "per class", "scores kept", "scores dropped", "cached"], rows)
    # the name is what people copy: give it its full width, let the numbers wrap instead
    tbl.columns[0].min_width = max(len(row[0]) for row in rows)
    several = [r for r in results if len(r["runs"]) > 1]
    if several:
        o.info(f"each of the {len(several[0]['runs'])} dynamics runs pruned with its own scores (the paper's "
               f"protocol): {several[0]['ref']} names {several[0]['ref']}-run0..{len(several[0]['runs']) - 1}; "
               "`yoco eval` pools them (--mean-scores prunes once with averaged scores)")
    elif any(r["protocol"] == "mean-scores" for r in results):
        o.info("pruned once with the scores averaged over the dynamics runs (--mean-scores), not per run")
    o.data({"from": cset.ipc, "dataset": cset.dataset, "results": results}, tbl)
