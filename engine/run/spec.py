"""The run spec: every setting of one search run, typed and frozen, built once and saved.

`prepare(search, flags)` builds it from a study's `Search` and its command line, checking each
setting (BadInput, one line) before anything starts, and claims the run's folder; for --resume
it is loaded from the run folder's search.json instead (the run's own settings, whatever the
flags say now). `RunSpec.to_json()` is search.json; `trial_space()` the constants every
trial's params hold (Tune stores them as the trial's params.json).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
import unicodedata
from pathlib import Path

import models
from engine.run.cli import (Flags, check_args, check_tracker, eval_settings,
                            parse_assignments)
from engine.data import (EMBEDDED_DATASETS, DataError, check_data, check_options,
                         dataset_shape, embedded_arch, load_dataset)
from engine.eval.settings import EvalSettings
from engine.eval.metrics.features import CLASSIFIER_DIM, INCEPTION_MIN_SIZE, resolve_auto
from engine.run.folder import ROOT, claim_run_folder, read_search_json, run_folder
from engine.run.record import environment, own_checkout
from engine.run.types import (BadInput, Resources, Row, RunRow, RunSpec, Search,  # noqa: F401
                              TrialSpec)



def prepare(search: Search, flags: Flags, argv: list[str] | None
            ) -> tuple[RunSpec, Path]:
    """The run's spec and folder, every setting checked (BadInput, one line): a new run's
    from the search and its flags, its folder claimed; a resumed run's from its search.json."""
    check_args(search, flags)
    evaluation = eval_settings(search, flags)
    out = run_folder(search, flags)
    if flags.resume:  # the run's own rows, data set, budget and evaluation
        spec = load(out, search, flags)
        from engine.report import damaged_trials  # pandas: only where a run is read
        damaged = damaged_trials(out)
        if damaged:  # a resume decides from these files which trials to continue, and how
            raise BadInput(f"--resume: {damaged[0]}; mend the file, or move that trial's "
                           "folder out of the run (the resume then trains it again)"
                           + (f" ({len(damaged) - 1} more damaged)" if len(damaged) > 1
                              else ""))
        return dataclasses.replace(spec, data_root=_check_files(spec.dataset, spec.data_root)), out
    data_root = _check_files(flags.dataset, flags.data_root)
    shape = dataset_shape(flags.dataset)
    rows = resolve_rows(search, flags, shape)
    space_json = _check_space(search, rows, shape) if flags.algorithm == "optuna" else None
    if flags.budget == "auto":
        check_schedules(rows, search.space if flags.algorithm == "optuna" else None)
    spec = RunSpec(
        name=search.name, title=search.title, dataset=flags.dataset, data_root=data_root,
        epochs=flags.epochs, budget=flags.budget, min_epochs=flags.min_epochs,
        early_stopping=search.early_stopping and flags.budget == "auto",
        seeds=tuple(range(flags.seeds)), metric=search.metric,
        mode=search.mode, scheduler=flags.scheduler, algorithm=flags.algorithm, rows=rows,
        table_metrics=tuple(search.table_metrics), paper=search.paper, samples=flags.samples,
        space=space_json, max_concurrent=flags.max_concurrent,
        evaluation=_resolve_features(evaluation, flags.dataset, shape),
        image_every=flags.image_every, checkpoint_every=flags.checkpoint_every[0],
        checkpoint_seconds=flags.checkpoint_every[1],
        precision=flags.precision,
        resources=flags.resources, git=git_commit(), environment=environment(ROOT),
        argv=tuple(sys.argv[1:] if argv is None else argv), sampled=search.space,
        trackers=flags.trackers)
    return spec, claim_run_folder(search, flags, out)


def budget_text(spec) -> str:
    """"30 epochs", or an auto budget's "epochs auto: each trial to its plateau of val/mse,
    20 to 200 epochs"."""
    if spec.budget == "auto":
        return (f"epochs auto: each trial to its plateau of {spec.metric}"
                + (" or past its best" if spec.early_stopping else "")
                + f", {spec.min_epochs} to {spec.epochs} epochs")
    return f"{spec.epochs} epochs"


# The schedules an auto budget cannot serve are the model's to say
# (models.needs_total_epochs): their rate at an epoch is a function of the run's total
# epochs, which a trial that ends at its plateau does not know.


def check_schedules(rows, space: dict | None = None) -> None:
    """--epochs auto: no row (nor a sampled space's corner) with a schedule tied to the total
    epochs (BadInput, one line)."""
    configs = [(f"row {r.label!r}", r.config) for r in rows]
    if space:
        from engine.run.ray_backend import space_corners  # Ray: a sampled search only
        configs += [(f"the space's point {point}", rows[0].config.replace(**point))
                    for point in space_corners(space) if "lr_schedule" in point]
    for where, cfg in configs:
        if models.needs_total_epochs(cfg):
            raise BadInput(f"--epochs auto: {where} has lr_schedule={cfg.lr_schedule}, which "
                           "anneals over the total epochs, unknown until the plateau; use "
                           "--set lr_schedule=plateau (ReduceLROnPlateau, the UAE code's) or "
                           "step, or a fixed --epochs N")


def load(out: Path, search: Search, flags: Flags) -> RunSpec:
    """A resumed run's spec from its search.json: its own rows, seeds, data set, budget,
    evaluation, sampling, scheduling and resources, whatever the flags say now (a resume that
    mixed today's flags in would repair a sampled run as a grid, or restore trials with other
    resources). The data root given now wins (the data may have moved); a key that an older
    run did not write takes the flag's value."""
    saved = read_search_json(out)
    if saved.get("name", search.name) != search.name:  # its report step is another study's
        raise BadInput(f"--resume: {out} is a run of {saved['name']}, not of {search.name}; "
                       f"resume it with its own study (vae-ablations run {saved['name']} "
                       f"--resume --out {out})")
    given = flags.resources
    try:
        spec = RunSpec.from_json(saved, defaults={
            "name": search.name, "title": search.title, "metric": search.metric,
            "mode": search.mode, "table_metrics": search.table_metrics,
            "scheduler": flags.scheduler, "search": flags.algorithm, "samples": flags.samples,
            "max_concurrent": flags.max_concurrent, "image_every": flags.image_every,
            "resources": {"cpu": given.cpu, "gpu": given.gpu}})
    except (KeyError, TypeError, ValueError) as e:  # e.g. a field this version dropped
        raise BadInput(f"--resume: {out / 'search.json'} holds a row this version cannot "
                       f"build ({e}); finish it with the commit it names") from None
    spec = dataclasses.replace(
        spec, data_root=flags.data_root or spec.data_root,
        # workers: run_folder checked they match
        resources=dataclasses.replace(spec.resources, workers=given.workers),
        environment=_resumed(saved.get("environment"), environment(ROOT)),
        sampled=search.space,
        # the run's own trackers and any given now (a tracker added to a resumed run logs
        # the trials it runs from here on)
        trackers=tuple(dict.fromkeys([*spec.trackers, *flags.trackers])))
    for tracker in spec.trackers:  # installed and able to log here too
        check_tracker(tracker)
    if flags.more_seeds is not None:
        spec = more_seeds(spec, flags)
    print(f"resume: with the run's own settings (search.json): {len(spec.rows)} rows x "
          f"{seeds_text(spec)} on {spec.dataset}, {budget_text(spec)}, "
          f"--search {spec.algorithm}, --scheduler {spec.scheduler}, evaluation "
          f"{','.join(spec.evaluation.metrics) or 'none'}"
          f"{', trackers ' + ','.join(spec.trackers) if spec.trackers else ''}; flags given "
          "now other than --address, --data-root, --tracker and --more-seeds (with --rows) "
          "are ignored", flush=True)
    return spec


def more_seeds(spec: RunSpec, flags: Flags) -> RunSpec:
    """--resume --more-seeds K [--rows ...]: the run's spec with seeds 0..K-1 for the rows
    given (every row without --rows), so that the resume starts the seeds they lack beside
    the trials they have. For the rows whose pairs the report leaves unresolved ("≈ n seeds
    per row would resolve"), without training the others again (BadInput, one line, where
    there is nothing to add)."""
    k = flags.more_seeds
    if spec.algorithm != "grid":
        raise BadInput(f"--more-seeds: this run samples its trials (--search {spec.algorithm}); "
                       "seeds are added to a grid's rows only")
    if spec.scheduler == "asha":  # a lone new trial is never stopped: two rules in one row
        raise BadInput("--more-seeds: ASHA stopped this run's weak trials against their whole "
                       "cohort, and seeds added now would be judged only against each other; "
                       "give a fresh run (--scheduler fifo) the seeds instead")
    labels = [r.label for r in spec.rows]
    if flags.rows is not None:
        labels = list(dict.fromkeys(rows_given(flags.rows, labels, "this run")))
    grown = {label: tuple(sorted(set(spec.seeds_of(label)) | set(range(k))))
             for label in labels}
    grown = {label: seeds for label, seeds in grown.items() if seeds != spec.seeds_of(label)}
    if not grown:
        fewest = min(len(spec.seeds_of(label)) for label in labels)
        raise BadInput(f"--more-seeds {k}: {'each row given' if flags.rows else 'every row'} "
                       f"has seeds 0..{k - 1} already (the fewest: {fewest}); give a number "
                       f"above {fewest}")
    kept = [label for label in labels if label not in grown]
    print(f"more seeds: {', '.join(f'{label} to {len(s)}' for label, s in grown.items())}"
          + (f" ({', '.join(kept)}: {k} or more already)" if kept else ""), flush=True)
    return dataclasses.replace(spec, row_seeds={**spec.row_seeds, **grown})


def seeds_text(spec: RunSpec) -> str:
    """"3 seeds", or "3 seeds (UAE, RAE-GP: 6)" where --more-seeds gave rows more (the run's
    own count stays first: the rows' first seeds)."""
    by_count: dict[int, list[str]] = {}
    for label, seeds in spec.row_seeds.items():
        by_count.setdefault(len(seeds), []).append(label)
    more = "; ".join(f"{', '.join(labels)}: {n}" for n, labels in sorted(by_count.items()))
    return f"{len(spec.seeds)} seeds" + (f" ({more})" if more else "")


def resolve_rows(search: Search, flags: Flags, shape: tuple[int, ...]
                 ) -> tuple[RunRow, ...]:
    """Every row (or --rows') as a validated Config that builds for images of `shape`, with
    its data options checked for the data set (else BadInput)."""
    try:
        overrides = parse_assignments("--set", flags.set, models.Config())
    except ValueError as e:
        raise BadInput(str(e)) from None
    labels = list(search.rows)
    if flags.rows is not None:
        wanted = rows_given(flags.rows, labels, search.name)
        twice = next((w for i, w in enumerate(wanted) if w in wanted[:i]), None)
        if twice is not None:  # it trained seed 0 twice into one row and left an empty one
            raise BadInput(f"--rows: {twice!r} given twice; give each row once (more seeds: "
                           "--seeds)")
        labels = wanted
    out = []
    for label in labels:
        row = Row.of(search.rows[label])
        try:
            cfg = embedded_arch(models.resolve(row.preset, **{**row.fields, **overrides}),
                                flags.dataset)
            models.build(cfg, shape)  # e.g. an architecture that does not fit the data
        except (ValueError, TypeError) as e:
            raise BadInput(f"row {label!r}: {e}") from None
        except (RuntimeError, MemoryError) as e:  # e.g. --set hidden=300000
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise BadInput(f"row {label!r}: the model cannot be built on this machine "
                           f"({first[:200]}); make it smaller (hidden, latent_dim, arch)"
                           ) from None
        if cfg.batch_size < 2 * flags.workers_per_trial:
            raise BadInput(f"row {label!r}: batch_size {cfg.batch_size} gives fewer than 2 "
                           f"examples to each of {flags.workers_per_trial} workers")
        # the preset the row names (by itself or with fields), when it is not the label
        named = row.preset
        out.append(RunRow(label, cfg, named if isinstance(named, str) and named != label
                          else None))
    data = row_data(search, labels, flags.dataset)
    return tuple(dataclasses.replace(r, data=data.get(r.label)) for r in out)


def row_key(name: str) -> str:
    """A row's name as --rows matches it where it is not given exactly: any case, a Greek
    letter as its English name (Σ: sigma, as TensorBoard's and HParams' ASCII columns and a
    shell spell it), a superscript as its digit (σx²: sigmax2), and the separators - _ . =
    and spaces left out ("*" counts: VAE* is not VAE)."""
    text = []
    for ch in unicodedata.normalize("NFKD", name):
        if unicodedata.name(ch, "").startswith("GREEK "):
            ch = unicodedata.name(ch).split()[-1]
        text.append(ch)
    return "".join(ch for ch in "".join(text).casefold() if ch.isalnum() or ch == "*")


def rows_named(given: str, labels) -> list[str]:
    """The rows of `labels` that `given` may name: itself where it is one, else every label
    whose row_key is its row_key (one: the row; several: ambiguous; none: unknown)."""
    labels = list(labels)
    return [given] if given in labels else [x for x in labels if row_key(x) == row_key(given)]


def rows_given(text: str, labels: list[str], of: str) -> list[str]:
    """The labels among `labels` (the rows of `of`, a study or "this run") that --rows `text`
    names, in its order (BadInput where it names none, or a row that is not one of them)."""
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    if not wanted:
        raise BadInput(f"--rows {text!r} names no row; give comma-separated labels (rows of "
                       f"{of}: {', '.join(labels)}) or leave it out for every row")
    return [_match_row(w, labels, of) for w in wanted]


def _match_row(given: str, labels: list[str], search: str) -> str:
    """The row `given` names (rows_named), else BadInput where none is, or several are."""
    found = rows_named(given, labels)
    if len(found) > 1:
        raise BadInput(f"--rows: {given!r} could be any of {', '.join(found)}; give its exact "
                       "name")
    if not found:
        raise BadInput(f"--rows: unknown row {given!r}; rows of {search}: {', '.join(labels)}")
    return found[0]


def row_data(search: Search, labels, dataset: str) -> dict[str, dict]:
    """label -> data options of the rows that have any, each checked for `dataset`
    (BadInput, one line, on a bad one)."""
    out = {}
    for label in labels:
        options = Row.of(search.rows[label]).data
        try:
            check_options(options, dataset)
        except ValueError as e:
            raise BadInput(f"row {label!r}: {e}") from None
        if options:
            out[label] = options
    return out


def _resumed(first: dict | None, this: dict) -> dict:
    """The first start's record, with this resume's appended to its "resumes"."""
    first = dict(first or {})  # a run from before the record: only the resumes'
    first["resumes"] = [*first.get("resumes", []), {**this, "git": git_commit()}]
    return first


def git_commit(root: Path = ROOT) -> str:
    """The checkout's commit (+uncommitted where the tree is dirty); for an installed copy,
    which is no checkout of its own, the installed package's version."""
    if not own_checkout(root):
        try:
            return f"installed vae-ablations {importlib.metadata.version('vae-ablations')}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return (sha + ("+uncommitted" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _check_space(search: Search, rows: tuple[RunRow, ...], shape) -> dict:
    """The Optuna space as JSON distributions, after building the first row at its corners
    (BadInput where Optuna cannot sample it or a corner does not build)."""
    from engine.run.ray_backend import describe_space, space_corners  # Ray: a sampled search only
    try:
        space_json = describe_space(search.space)
    except Exception as e:  # noqa: BLE001  (ValueError, AttributeError, ...)
        raise BadInput(f"space of {search.name}: Optuna cannot sample it ({e}); "
                       "use tune.uniform / loguniform / randint / choice") from None
    for point in space_corners(search.space):
        try:
            models.build(rows[0].config.replace(**point), shape)
        except ValueError as e:
            raise BadInput(f"space of {search.name}: {e}") from None
    return space_json


def _resolve_features(evaluation: EvalSettings, dataset: str, shape) -> EvalSettings:
    """FID's feature space decided here, once, so that no node's trial picks another; and
    refused before any trial where it cannot serve, or where --fid-samples is too few for a
    full-rank covariance of its features (the FIDs would only be "not computed" at the end)."""
    if "fid" not in evaluation.metrics:
        return evaluation
    from engine.eval.metrics.pretrained import WeightsMissing, inception_weights_path  # lpips
    if evaluation.features == "auto":
        n_ref = (len(getattr(load_dataset(dataset), evaluation.reference_split).images)
                 if dataset in EMBEDDED_DATASETS else None)
        evaluation = evaluation.replace(features=resolve_auto(
            shape, n_ref, evaluation.inception_weights))
    dim = CLASSIFIER_DIM
    if evaluation.features == "inception":
        dim = 2048  # pool3
        if min(shape[1:]) < INCEPTION_MIN_SIZE:
            raise BadInput(f"--features inception: {dataset}'s {shape[1]}x{shape[2]} images "
                           f"are below the {INCEPTION_MIN_SIZE} px Inception is used at; use "
                           "--features classifier (or auto)")
        try:
            inception_weights_path(evaluation.inception_weights)
        except WeightsMissing as e:
            raise BadInput(f"--features inception: {str(e).splitlines()[0]}") from None
    if evaluation.fid_samples <= dim:
        raise BadInput(f"--fid-samples {evaluation.fid_samples}: a FID in the "
                       f"{evaluation.features} features ({dim} dimensions) needs more samples "
                       f"than dimensions; give at least {dim + 1}")
    return evaluation


def _check_files(dataset: str, data_root: str | None) -> str | None:
    """The data set's files are there (or downloaded) and decode (shapes, counts, labels)
    before any trial starts: a corrupt or truncated file is one line naming it here, where in
    the trials it failed every trial twice with tracebacks. Decoding fills this machine's
    decode-once cache, which its trials then read. The root is kept as given (made absolute),
    None when not given, so that each node of a cluster finds its own $VAE_DATA_ROOT; this
    checks the driver's machine only."""
    if data_root:
        data_root = str(Path(data_root).expanduser().resolve())
    try:
        if check_data(dataset, data_root) is not None:  # a real data set: its files
            load_dataset(dataset, data_root)
    except (DataError, OSError) as e:  # OSError: e.g. a cache folder that cannot be locked
        raise BadInput(str(e).splitlines()[0] if str(e) else repr(e)) from None
    return data_root
