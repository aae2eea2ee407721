"""Training dynamics of a condensed set (docs/method.md §2), recorded online or read from the reference.

Storage layout (what `load_dynamics` reads; `yoco score`/`yoco prune` consume it):

  stage "dynamics-run" (one per seed; key = set digest + params + seed)
      outputs  "stats"  a `data.dynamics.Dynamics` file (per-(epoch, sample) statistics)
               "model"  final weights, safetensors with meta {"format": "yoco-model/1", "spec": model spec}
                        (absent for a reference pickle read without --checkpoint)
               "records" (only with `records=True`, i.e. `--records`) a `data.dynamics.Records` file: the
                        per-batch float16 log-probabilities, what `export_reference` writes as td-*.pickle
      meta     seed, epochs, final training loss/accuracy, test accuracies if asked, device
  stage "dynamics" (the group; ref "<set ref>@dynamics")
      outputs  "seed{s}/stats", "seed{s}/model" (and "seed{s}/records") for every seed s (same object digests)
      meta     dataset, num_classes, num_samples, seeds, epochs, set (key), model (spec), source
               ("engine" | "reference-pickle"), runs {seed: run key}, summary

Indices of the statistics are decoded indices in the order of docs/method.md §1.3 (`CondensedSet.decoded()`).
Recording happens on the device from the very forward pass the SGD step uses (no extra pass,
no test-set pass unless `test_every` is given). Long runs checkpoint at epoch boundaries every
30 s into the store's partial folder, so an interrupted run resumes where it stopped and the
result is byte-identical to an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.condensed import CondensedSet
from ..errors import IntegrityError, UsageError
from ..progress import SILENT, Reporter
from ..store import Manifest, StageResult, Store, run_cached
from ..store.store import sha256_file
from . import training
from .datasets import dataset_stats, load_real
from .seeded import (
    Keyed,
    SeedWork,
    check_run_count,
    group_manifest,
    plan_seeds,
    run_jobs,
    seed_manifests,
)
from .sets import set_label
from .training import TrainPreset

# 2: scores from float16 log-probs (docs/method.md §2.3); 3: float32 per-epoch error by a non-cancelling formula
RUN_STAGE, STAGE, VERSION = "dynamics-run", "dynamics", 3
CHECKPOINT_EVERY_S = 30.0


def preset_for(dataset: str, cset: CondensedSet | None = None) -> TrainPreset:
    """The dataset's dynamics preset; for a dataset without one, fitted to the set's images."""
    return training.preset("dynamics", dataset, data_shape(cset) if cset is not None else None)


def data_shape(cset: CondensedSet):
    from .fitted import DataShape

    return DataShape(int(cset.images.shape[1]), int(cset.images.shape[-1]), cset.num_classes)


def _set_digest(m: Manifest) -> str:
    return m.digest("set")


def plan(cset: CondensedSet, *, test_every: int | None = None, **overrides):
    """(model spec, TrainConfig) for a set: its dataset's preset with the given overrides (epochs,
    batch_size, lr, model, aug, cutmix, compile); the LR decays per iteration as in the reference."""
    shape = cset.images.shape
    return training.plan(preset_for(cset.dataset, cset), num_classes=cset.num_classes, channels=int(shape[1]),
                         image_size=int(shape[-1]), schedule="iteration",
                         eval_at=lambda eps: training.every_k_epochs(test_every, eps), **overrides)


# -- recording with the engine -------------------------------------------------------------------

@dataclass
class DynamicsSpec:
    """What a dynamics job needs, picklable (sent to a worker process or a Ray node)."""
    model: dict
    cfg: Any
    data: Any               # Shared((x, y)): the decoded set
    num_classes: int
    dataset: str
    normalize: tuple | None
    test: tuple | None
    device: str
    batched: str = "auto"
    records: bool = False
    seeds: list = field(default_factory=list)
    partial: str | None = None  # checkpoint folder (only where the store is on this machine)


def dynamics_job(spec: DynamicsSpec, progress: Callable | None = None) -> list:
    """Train one model per seed, recording its dynamics: `stats`, `model` (and `records`) per seed."""
    from ..data.dynamics import Recorder
    from ..nn import engine
    from ..nn.device import resolve_device

    dev = resolve_device(spec.device)
    x, y = spec.data.value
    recs = [Recorder(y.to(dev), spec.cfg.epochs, spec.num_classes, keep_records=spec.records) for _ in spec.seeds]
    ck = None
    if spec.partial is not None:
        ck = engine.Checkpoint(Path(spec.partial), CHECKPOINT_EVERY_S, extra_get=recs[0].state,
                               extra_set=recs[0].load_state)
    results = engine.train(spec.model, x, y, spec.cfg, seeds=spec.seeds, device=dev, normalize=spec.normalize,
                           test=spec.test, hooks=[r.update for r in recs], on_epoch=progress, checkpoint=ck,
                           batched=spec.batched)
    return [_dynamics_output(spec, dev, int(y.shape[0]), res, rec) for res, rec in zip(results, recs)]


def _dynamics_output(spec: DynamicsSpec, dev, n: int, res, rec):
    import tempfile

    from ..executors import Output
    from ..nn import engine
    from ..nn.device import describe

    cfg, seed = spec.cfg, res.seed
    dyn = rec.result({"seed": seed, "dataset": spec.dataset, "model": spec.model, "train": cfg.params(),
                      "source": "engine", "device": dev.type})
    last = res.history[-1] if res.history else {}
    meta = {"seed": seed, "epochs": cfg.epochs, "num_samples": n,
            "final_loss": last.get("loss"), "final_acc": last.get("acc"),
            "test_acc": {str(k): v for k, v in res.evals.items()}, "device": describe(dev),
            "compiled": res.compiled, "batched": res.batched,
            "summary": f"seed {seed}: {cfg.epochs} epochs of {spec.model['name']} on {n} decoded images"}
    with tempfile.TemporaryDirectory(prefix="yoco-dynamics-") as tmp:
        files = {"stats": dyn.save(Path(tmp) / "dynamics.safetensors").read_bytes(),
                 "model": engine.save_model(res.model, Path(tmp) / "model.safetensors").read_bytes()}
        kept = rec.result_records()
        if kept is not None:
            files["records"] = kept.save(Path(tmp) / "records.safetensors",
                                         {"seed": seed, "dataset": spec.dataset,
                                          "num_classes": spec.num_classes}).read_bytes()
            meta["records"] = len(kept)
    return Output(files, meta)


def compute_dynamics(store: Store, set_manifest: Manifest, cset: CondensedSet, *, seeds: int = 3,
                     device: str = "auto", batched: str = "auto", on_epoch: Callable | None = None,
                     ref: str | None = None, records: bool = False, reporter: Reporter = SILENT,
                     announce: bool = False, pool=None, on_status: Callable | None = None,
                     **overrides) -> tuple[Manifest, dict]:
    """Train `seeds` models on the decoded set, recording dynamics; returns (group manifest, info).

    records=True also keeps every batch's float16 log-probabilities (the reference's td-pickle
    content) as output "records"; it is part of the key, so such runs are cached apart. Seeds that
    must train are announced on `reporter` with an estimate when they take more than about a
    minute (always, with `announce`). Each seed is a sweep job on `pool` (a `sweep.Pool`, or None:
    an executor chosen for this work alone, see `yoco_cli.executors`).
    """
    from ..executors import Resources, Shared, estimate_seconds, gpu_share
    from ..nn import engine
    from ..nn.device import resolve_device

    check_run_count(seeds, "--seeds")
    dev = resolve_device(device)
    spec, cfg = plan(cset, **overrides)
    x, y, _ = cset.decoded()
    together = engine.plan_batched(spec, dev, seeds, batched)
    _check_memory(int(y.shape[0]), cfg.epochs, seeds if together else 1, cset.num_classes if records else 0)
    norm = engine.set_normalization(cset.value_space, dataset_stats(cset.dataset, store))
    test = _test_split(store, cset, cfg)
    params = {"model": spec, "train": cfg.params(), "normalize": list(map(list, norm)) if norm else None,
              "value_space": cset.value_space}
    if records:
        params["records"] = True
    inputs = {"set": _set_digest(set_manifest)}
    job_spec = DynamicsSpec(spec, cfg, Shared(f"train:{inputs['set']}", (x, y)), cset.num_classes, cset.dataset,
                            norm, test, device, batched, records)
    n, size = int(y.shape[0]), int(x.shape[-1])
    cost = estimate_seconds(cfg.epochs * engine.iterations_per_epoch(n, cfg.batch_size),
                            min(n, cfg.batch_size), size * size)
    res = Resources(cpus=1, gpu=0.0 if device == "cpu" else gpu_share(size))
    seed_list = list(range(seeds))
    jobs = plan_seeds(store, Keyed(RUN_STAGE, VERSION, params, inputs), seed_list,
                      SeedWork(dynamics_job, job_spec, f"dynamics {cset.dataset}", cost, res), together=together)
    missing = [r for j in jobs for r in j.runs if store.load_run(r.stage, r.key) is None]
    if missing:
        from .estimates import announce_training
        from .modelcheck import label
        from .sets import set_label

        why = training.fitted_preset("dynamics", cset.dataset, data_shape(cset))[1]
        if why:
            reporter.info(why)
        what = (f"training dynamics of {set_label(store, set_manifest)}: {len(missing)} seed(s) x {cfg.epochs} "
                f"epochs of {label(spec['name'], spec.get('options', {}))} on {n} images")
        announce_training(reporter, what, spec, cfg, n, len(missing), dev,
                          test_n=len(test[1]) if test else 0, always=announce)
    report = run_jobs(store, jobs, pool, dev.type, on_epoch, on_status)
    runs, fresh = seed_manifests(jobs, report)
    meta = _group_meta(cset, set_manifest, spec, cfg.epochs, seed_list, runs, "engine", n)
    meta["records"] = records
    group = group_manifest(store, Keyed(STAGE, VERSION, params, inputs), dict(zip(seed_list, runs)), meta,
                           ref=ref or _default_ref(store, set_manifest))
    return group, {"computed": fresh, "runs": runs, "report": report}


def _check_memory(samples: int, epochs: int, runs_at_once: int, record_classes: int = 0) -> None:
    """The recorder keeps (epochs x samples) statistics per run in memory (plus, with records,
    float16 log-probabilities and an int32 index per sample and epoch): refuse what cannot fit
    before allocating (a typo'd --epochs was an allocator RuntimeError)."""
    from .. import limits

    per = _STAT_BYTES + (2 * record_classes + 4 if record_classes else 0)
    what = "per-epoch statistics and records" if record_classes else "per-epoch statistics"
    limits.check_allocation(samples * epochs * per * runs_at_once,
                            f"the {what} of {epochs} epochs for {samples} samples",
                            "use fewer --epochs" + (" or drop --records" if record_classes else ""))


def _test_split(store: Store, cset: CondensedSet, cfg) -> tuple | None:
    if not cfg.eval_at:
        return None
    from .space import test_split

    ds = load_real(cset.dataset, store)
    return test_split(ds, cset.value_space, cset.condense_key)[0], ds.test_y


def _group_meta(cset, set_manifest, spec, epochs, seed_list, runs, source, n) -> dict:
    accs = [r.meta.get("final_acc") for r in runs if r.meta.get("final_acc") is not None]
    acc = f"; final train acc {sum(accs) / len(accs):.3f}" if accs else ""
    return {"dataset": cset.dataset, "num_classes": cset.num_classes, "num_samples": n, "seeds": seed_list,
            "epochs": epochs, "set": set_manifest.key, "model": spec, "source": source,
            "summary": f"dynamics of {n} decoded images, {len(seed_list)} seed(s) x {epochs} epochs, "
                       f"{spec['name'] if spec else 'n/a'}{acc}"}


def _default_ref(store: Store, set_manifest: Manifest) -> str:
    from .sets import set_label

    return f"{set_label(store, set_manifest)}@dynamics"


# -- the reference's td-*.pickle files -------------------------------------------------------------

def read_reference_pickle(path: Path, targets, num_classes: int, seed: int = 0):
    """Replay a reference `td-ipc*.pickle` (docs/method.md §2.3) through the same Recorder the engine feeds.

    The records of one epoch go to the Recorder together, as one matrix, whenever their tensors are
    stored as torch pickles them (dense, float log-probs, integer indices) and no sample repeats:
    the statistics are bit for bit those of feeding the records one by one, which is what happens
    to any other record.
    """
    from ..data import safe_pickle
    from ..data.dynamics import Recorder

    doc = safe_pickle.load(path, lazy_tensors=True)
    records = doc.get("training_dynamics") if isinstance(doc, dict) else None
    if not isinstance(records, list) or not records:
        raise IntegrityError(f"{path} is not a reference dynamics pickle",
                             "expected a dict with a non-empty 'training_dynamics' list (docs/method.md §2.3)")
    n = int(targets.shape[0])
    epochs = _epoch_count(path, records, n)
    rec = Recorder(targets, epochs, num_classes)
    batch = _EpochBatch(path, n, num_classes)
    for i, r in enumerate(records):
        epoch, idx, out, bulk = _record(path, i, r, num_classes)
        if not batch.takes(epoch, idx, out, bulk):
            batch.flush(rec)
            batch = _EpochBatch(path, n, num_classes)
        batch.add(i, epoch, idx, out, bulk)
    batch.flush(rec)
    name = doc.get("data-name")
    meta = {"seed": seed, "source": "reference-pickle", "data_name": str(name) if name is not None else None,
            "records": len(records)}
    return rec.result(meta), len(records)


def _epoch_count(path: Path, records: list, n: int) -> int:
    """1 + the largest epoch, checked before the statistics (epochs x samples) are allocated."""
    from .. import limits

    top = -1
    for i, r in enumerate(records):
        try:
            e = int(r["epoch"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise IntegrityError(f"{path}: record {i} lacks an integer 'epoch'") from None
        if e < 0:
            raise IntegrityError(f"{path}: record {i} has a negative epoch ({e})")
        top = max(top, e)
    if top >= len(records):  # every epoch of a recorded run has at least one batch
        raise IntegrityError(f"{path}: a record declares epoch {top}, but the file holds only {len(records)} "
                             "records", "a genuine dynamics pickle has records for every epoch; the file is damaged")
    limits.check_allocation((top + 1) * n * _STAT_BYTES, f"the statistics of {top + 1} epochs x {n} samples")
    return top + 1


_STAT_BYTES = 8  # per (epoch, sample): float32 error + bool correct while recording, their float16/bit copies
_BULK_ROWS = 1 << 16  # rows per bulk update: ~26 MB of float32 log-probs at 100 classes


def _record(path: Path, i: int, r, num_classes: int):
    """(epoch, idx, output, bulk) of record i, shapes checked. bulk: both are dense StoredTensors
    (how torch pickles fresh tensors), integer indices and float outputs, ready to be joined."""
    import torch

    from ..data.safe_pickle import StoredTensor

    try:
        idx, out, epoch = r["idx"], r["output"], int(r["epoch"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{path}: record {i} lacks idx/output/epoch") from None
    try:
        if not isinstance(idx, StoredTensor) or len(idx.size) != 1:
            idx = torch.as_tensor(idx.build() if isinstance(idx, StoredTensor) else idx).long().flatten()
        if not isinstance(out, StoredTensor):
            out = torch.as_tensor(out)
    except (TypeError, ValueError, RuntimeError):
        raise IntegrityError(f"{path}: record {i} lacks idx/output/epoch") from None
    size = tuple(out.size if isinstance(out, StoredTensor) else out.shape)
    count = idx.size[0] if isinstance(idx, StoredTensor) else int(idx.shape[0])
    if len(size) != 2 or size[0] != count or size[1] != num_classes:
        raise IntegrityError(f"{path}: record {i} has output shape {size} for {count} "
                             f"indices and {num_classes} classes")
    bulk = (isinstance(idx, StoredTensor) and isinstance(out, StoredTensor) and idx.dense and out.dense
            and not idx.dtype.is_floating_point and idx.dtype != torch.bool and out.dtype.is_floating_point)
    return epoch, idx, out, bulk


class _EpochBatch:
    """Consecutive records of one epoch that go to the Recorder as one bulk update when they can."""

    def __init__(self, path: Path, n: int, num_classes: int):
        self.path, self.n, self.num_classes = path, n, num_classes
        self.epoch, self.rows, self.bulk = -1, 0, True
        self.numbers: list[int] = []
        self.idx: list[Any] = []  # StoredTensor or torch.Tensor, as the pickle holds them
        self.out: list[Any] = []

    def takes(self, epoch: int, idx, out, bulk: bool) -> bool:
        if not self.numbers:
            return True
        return (self.bulk and bulk and epoch == self.epoch and self.rows + idx.size[0] <= _BULK_ROWS
                and idx.dtype == self.idx[0].dtype and out.dtype == self.out[0].dtype)

    def add(self, i: int, epoch: int, idx, out, bulk: bool) -> None:
        self.bulk = self.bulk and bulk
        self.rows += idx.size[0] if self.bulk else 0
        self.epoch = epoch
        self.numbers.append(i)
        self.idx.append(idx)
        self.out.append(out)

    def flush(self, rec) -> None:
        import torch

        from ..data import safe_pickle

        if self.bulk and self.numbers:
            idx = safe_pickle.join(self.idx).long()
            in_range = not idx.numel() or (int(idx.min()) >= 0 and int(idx.max()) < self.n)
            if in_range and (not idx.numel() or int(torch.bincount(idx, minlength=self.n).max()) <= 1):
                out = safe_pickle.join(self.out).view(-1, self.num_classes)
                rec.update(self.epoch, idx, out, batch_sizes=[t.size[0] for t in self.idx])
                return
        for i, idx, out in zip(self.numbers, self.idx, self.out):  # one by one, as recorded
            idx = _built(idx).long()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
                bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
                raise IntegrityError(f"{self.path}: record {i} indexes sample {bad}, the set decodes to {self.n}",
                                     "pass the condensed set this pickle was recorded on")
            rec.update(self.epoch, idx, _built(out))


def _built(t):
    from ..data.safe_pickle import StoredTensor

    return t.build() if isinstance(t, StoredTensor) else t


def _load_reference_weights(path: Path, model) -> None:
    """Map a reference ckpt-*.pt state dict onto our model by order and shape (names differ)."""
    import torch

    from ..data.formats import check_torch_zip

    check_torch_zip(path)  # declared member sizes, before torch inflates any
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  torch.load raises pickle, zip, EOF or RuntimeError errors for a bad file
        raise IntegrityError(f"{path} is not a readable weights-only checkpoint ({type(e).__name__})") from None
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IntegrityError(f"{path} holds no state dict", "expected {'model_state_dict': ..., 'epoch': ...}")
    ours = model.state_dict()
    theirs = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    mine = [k for k in ours if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(mine) or any(ours[k].shape != v.shape for k, v in zip(mine, theirs)):
        raise UsageError(f"{path} does not fit model {model.spec['name']} ({len(theirs)} vs {len(mine)} tensors)",
                         "pass the --model the checkpoint was trained with")
    model.load_state_dict({**ours, **{k: v.to(ours[k].dtype) for k, v in zip(mine, theirs)}})


def import_dynamics(store: Store, set_manifest: Manifest, cset: CondensedSet, files: list[Path],
                    checkpoints: list[Path] | None = None, model: str | None = None,
                    ref: str | None = None) -> tuple[Manifest, dict]:
    """`--from-file`: one reference pickle per seed (e.g. reproduce_1..3), optional final weights."""
    from ..files import check_unchanged, stamp
    from ..nn import engine
    from ..nn.models import model_from_spec

    checkpoints = checkpoints or []
    if checkpoints and len(checkpoints) != len(files):
        raise UsageError(f"{len(checkpoints)} --checkpoint for {len(files)} --from-file",
                         "give one checkpoint per dynamics file, in the same order")
    for p in [*files, *checkpoints]:
        if not Path(p).is_file():
            raise UsageError(f"{p} does not exist or is not a file")
    spec = plan(cset, model=model)[0] if checkpoints else None
    _, y, _ = cset.decoded()
    stamps = [stamp(Path(f)) for f in files]
    digests = [sha256_file(Path(f)) for f in files]
    ck_digests = [sha256_file(Path(c)) for c in checkpoints]
    runs: dict[int, Manifest] = {}
    epochs = 0
    for seed, (f, d) in enumerate(zip(files, digests)):
        inputs = {"set": _set_digest(set_manifest), "pickle": d}
        if checkpoints:
            inputs["checkpoint"] = ck_digests[seed]

        def compute(tmp: Path, key: str, f=Path(files[seed]), seed=seed) -> StageResult:
            dyn, n_records = read_reference_pickle(f, y, cset.num_classes, seed)
            check_unchanged(f, stamps[seed])  # the key's digest is of the bytes just read
            outputs = {"stats": dyn.save(tmp / "dynamics.safetensors")}
            if spec is not None:  # planned exactly when checkpoints were given
                net = model_from_spec(spec)
                _load_reference_weights(Path(checkpoints[seed]), net)
                outputs["model"] = engine.save_model(net, tmp / "model.safetensors")
            return StageResult(outputs=outputs, meta={
                "seed": seed, "epochs": dyn.epochs, "records": n_records, "file": f.name,
                "num_samples": dyn.num_samples, "summary": f"seed {seed}: {f.name}, {n_records} records"})

        m, _ = run_cached(store, RUN_STAGE, VERSION, {"source": "reference-pickle", "seed": seed, "model": spec},
                          inputs, compute)
        runs[seed] = m
        epochs = max(epochs, int(m.meta.get("epochs", 0)))
    meta = _group_meta(cset, set_manifest, spec, epochs, list(runs), runs.values(), "reference-pickle",
                       int(y.shape[0]))
    inputs = {"set": _set_digest(set_manifest), "pickles": ",".join(digests), "checkpoints": ",".join(ck_digests)}
    group = group_manifest(store, Keyed(STAGE, VERSION, {"source": "reference-pickle", "model": spec}, inputs), runs, meta,
                           ref=ref or _default_ref(store, set_manifest))
    return group, {"computed": [], "runs": list(runs.values())}


# -- writing the reference's td-*.pickle ------------------------------------------------------------

def has_records(group: Manifest) -> bool:
    seeds = group.meta.get("seeds", [])
    return bool(seeds) and all(f"seed{s}/records" in group.outputs for s in seeds)


def export_paths(path: Path, seeds: list[int]) -> dict[int, Path]:
    """One file per seed: `{seed}` in the name is replaced, else -seedN is added (one seed: as given)."""
    path = Path(path)
    if "{seed}" in path.name:
        return {s: path.with_name(path.name.replace("{seed}", str(s))) for s in seeds}
    if len(seeds) == 1:
        return {seeds[0]: path}
    return {s: path.with_name(f"{path.stem}-seed{s}{path.suffix}") for s in seeds}


def export_reference(store: Store, group: Manifest, path: Path) -> dict[int, Path]:
    """Write every seed's records as the reference's td-*.pickle (docs/method.md §2.3); returns {seed: file}."""
    from ..data.dynamics import Records
    from ..data.reference_files import td_document, write_pickle
    from ..files import check_output_file

    if not has_records(group):
        raise UsageError(f"the dynamics {group.short} kept no per-batch records, which a td-*.pickle is made of",
                         "record them with `yoco dynamics SET --records` (same options), then --export")
    paths = export_paths(path, list(group.meta["seeds"]))
    for p in paths.values():
        check_output_file(p)
    for s, p in paths.items():
        records = Records.load(store.object_file(group.digest(f"seed{s}/records")))
        write_pickle(td_document(records, str(group.meta.get("dataset", ""))), p)
    return paths


# -- for consumers (scores, prune) ------------------------------------------------------------------

def ensure_dynamics(store: Store, set_manifest: Manifest, cset: CondensedSet, reporter: Reporter = SILENT,
                    **overrides) -> Manifest:
    """The set's dynamics with its preset (plus overrides), computed now if not cached, with a
    progress bar over every seed's epochs on the reporter. Training is announced (what, and how
    long on this device) before it starts; a stored result is named."""
    with reporter.progress(transient=True) as prog:
        task = prog.add_task("dynamics", total=None, status="")
        sized: list[bool] = []

        def on_epoch(info) -> None:
            if not sized:  # the epoch count is the preset's: known once training starts
                sized.append(True)
                prog.update(task, total=overrides.get("seeds", 3) * info.epochs)
            prog.update(task, advance=len(info.seeds), status=f"loss {sum(info.loss) / len(info.loss):.3f}")

        group, info = compute_dynamics(store, set_manifest, cset, on_epoch=on_epoch, reporter=reporter,
                                       announce=True, **overrides)
    how = "trained now" if info["computed"] else "stored"
    reporter.info(f"dynamics: {set_label(store, group)} ({group.meta.get('summary', '')}), {how}")
    return group


# -- what the store already holds for a set ----------------------------------------------------------

def dynamics_for_set(store: Store, set_manifest: Manifest, cset: CondensedSet, *, device: str = "auto",
                     overrides: dict | None = None, min_seeds: int = 1, needs_model: bool = False,
                     reporter: Reporter = SILENT, pool=None) -> Manifest:
    """The dynamics a consumer (score, prune, pipeline) should use for a set, training only when
    nothing stored fits, and saying in one line which artifact it is.

    With `overrides` (epochs, seeds, ...) the request is exact: that run, trained if missing.
    Without, what the store holds for this set comes first: the dynamics its `SET@dynamics` name
    points to, then imported reference dynamics, then other recorded runs (most seeds x epochs
    first), then reference files fetched for this set by name (`yoco fetch reproduce_1 ...`, read
    now), each only if it has `min_seeds` runs (and final weights when `needs_model`). Only then
    the preset is trained, announced with an estimate."""
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    if over:
        return ensure_dynamics(store, set_manifest, cset, reporter=reporter, device=device, pool=pool, **over)
    picked, skipped = _stored_pick(store, set_manifest, min_seeds, needs_model)
    if picked is not None:
        reporter.info(f"dynamics: {set_label(store, picked)} ({picked.meta.get('summary', '')}), stored: nothing to train"
                      + _preset_hint(picked, cset))
        return picked
    fetched = fetched_dynamics(store, set_manifest)
    if fetched and len(fetched) >= min_seeds and not needs_model:
        group, _ = import_dynamics(store, set_manifest, cset, [path for _, path in fetched])
        reporter.info(f"dynamics: {set_label(store, group)}, read from the fetched {', '.join(n for n, _ in fetched)}: "
                      "nothing to train")
        return group
    for why in skipped:
        reporter.info(why)
    return ensure_dynamics(store, set_manifest, cset, reporter=reporter, device=device, pool=pool)


def stored_dynamics(store: Store, set_manifest: Manifest) -> list[Manifest]:
    """Every dynamics group recorded or imported for this set (by the set's digest)."""
    digest = _set_digest(set_manifest)
    return [m for m in store.all_runs(STAGE) if m.inputs.get("set") == digest]


def fetched_dynamics(store: Store, set_manifest: Manifest) -> list[tuple[str, Path]]:
    """Reference dynamics files already downloaded for this set: registry entries of kind
    dynamics whose `set=` is the set's name (reproduce_1..3 give seeds 0..2, in registry order)."""
    from ..remote import registry
    from .downloads import cached
    from .sets import set_label

    names = set(store.refs_to(set_manifest.stage, set_manifest.key)) or {set_label(store, set_manifest)}
    out = []
    for e in registry.load():
        if e.kind == "dynamics" and e.attrs.get("set") in names:
            m = cached(store, e)
            if m is not None:
                out.append((e.name, store.object_file(m.digest("file"))))
    return out


def _stored_pick(store: Store, set_manifest: Manifest, min_seeds: int, needs_model: bool):
    """(the best stored group that fits, [one line per stored group that does not fit and why])."""
    from .sets import set_label

    groups = stored_dynamics(store, set_manifest)
    named = store.refs().get(f"{set_label(store, set_manifest)}@dynamics")
    skipped, fits = [], []
    for m in groups:
        seeds = m.meta.get("seeds", [])
        if len(seeds) < min_seeds:
            skipped.append(f"not using stored dynamics {set_label(store, m)}: {len(seeds)} seed(s), {min_seeds} needed")
        elif needs_model and not all(f"seed{s}/model" in m.outputs for s in seeds):
            skipped.append(f"not using stored dynamics {set_label(store, m)}: no final weights (this metric needs them)")
        else:
            fits.append(m)

    def rank(m: Manifest):
        return (named == (m.stage, m.key), m.meta.get("source") == "reference-pickle",
                len(m.meta.get("seeds", [])) * int(m.meta.get("epochs") or 0), m.provenance.get("created", ""))

    return (max(fits, key=rank) if fits else None), skipped


def _preset_hint(m: Manifest, cset: CondensedSet) -> str:
    """How to ask for the preset instead, when the stored run is not it."""
    if m.meta.get("source") != "engine":
        return ""
    p = preset_for(cset.dataset, cset)
    seeds, epochs = len(m.meta.get("seeds", [])), m.meta.get("epochs")
    if (seeds, epochs) == (3, p.epochs):
        return ""
    return f" (the preset's 3 seeds x {p.epochs} epochs: --dynamics-seeds 3 --dynamics-epochs {p.epochs})"


def load_dynamics(store: Store, manifest: Manifest) -> list[tuple[Any, Any, dict | None]]:
    """[(Dynamics, final model or None, model spec or None)] for every seed of a group manifest."""
    from ..data.dynamics import Dynamics
    from ..nn.engine import load_model

    if manifest.stage != STAGE:
        raise UsageError(f"{manifest.short} is a {manifest.stage} artifact, not dynamics", "see `yoco cache ls`")
    out = []
    for s in manifest.meta["seeds"]:
        dyn = Dynamics.load(store.read_output(manifest, f"seed{s}/stats"))
        model = None
        if f"seed{s}/model" in manifest.outputs:
            model = load_model(store.read_output(manifest, f"seed{s}/model"))
        out.append((dyn, model, getattr(model, "spec", None) or manifest.meta.get("model")))
    return out


def summary_rows(store: Store, group: Manifest) -> list[dict]:
    rows = []
    for s, key in sorted(group.meta.get("runs", {}).items(), key=lambda kv: int(kv[0])):
        m = store.load_run(RUN_STAGE, key)
        meta = m.meta if m else {}
        tests = meta.get("test_acc") or {}
        last_test = tests[max(tests, key=int)] if tests else None
        rows.append({"seed": int(s), "epochs": meta.get("epochs"), "final_loss": meta.get("final_loss"),
                     "final_acc": meta.get("final_acc"), "test_acc": last_test, "records": meta.get("records"),
                     "seconds": (m.provenance.get("seconds") if m else None), "key": key})
    return rows

