"""The report of a sampled search (--search optuna): its best configurations and Optuna's
parameter importances, from the run folder alone (like the rest of engine/report: no Ray, no torch).

- Best configurations: the completed trials (full budget) ranked by their final value of the
  search metric, each with its sampled parameters and the table's metrics. Trials ASHA stopped
  early are not ranked: their last value is at fewer epochs.
- Importances: an Optuna study rebuilt from the trials (optuna.trial.create_trial with the
  space's distributions, saved in search.json) and optuna.importance.get_param_importances
  (fANOVA, seed 0; normalized, so they sum to 1), twice: over every trial with its last
  reported metric, as Tune's OptunaSearch tells Optuna when a trial ends (so a trial stopped
  early counts with its value at the rung that stopped it, which favours what learns fast),
  and over the completed trials alone (one budget, fewer trials). Errored, diverged and
  unfinished trials and non-finite values are left out.
- The study itself, in the run folder (STUDY_FILE, SQLite), for optuna-dashboard and Optuna's
  plots: rebuilt from the run's files each time the report is written, rather than kept from
  the searcher's own study, because a resumed search samples with a new searcher (told the
  finished trials) and the run folder is the one record both halves share. Each run trial is
  an Optuna trial with its sampled parameters, its per-epoch values of the search metric as
  intermediate values, and its state: COMPLETE (value: the final metric), PRUNED (ASHA
  stopped it), FAIL (diverged, an error), RUNNING (unfinished). The report draws Optuna's
  importance and optimization-history plots from it.
"""
from __future__ import annotations

import math
import warnings

import pandas as pd

from engine.report import figures

TOP_K = 5
FILES = ("best_configs.csv", "best_configs.md", "importances.csv", "importances.md")
STUDY_FILE = "optuna.db"  # in the run folder: optuna-dashboard sqlite:///<run>/optuna.db
PLOTS = ("optuna_importances.png", "optuna_importances.pdf", "optuna_history.png",
         "optuna_history.pdf")


def is_sampled(search: dict) -> bool:
    """The run sampled a declared space (its search.json holds the distributions)."""
    return search.get("search") == "optuna" and bool(search.get("space"))


def best_configs(trials: pd.DataFrame, search: dict, k: int = TOP_K) -> pd.DataFrame:
    """The k best completed trials by the final search metric (ascending for mode "min"):
    rank (index), trial, seed, epochs_done, the searched fields, the metric, the table's
    metrics."""
    metric, params = search.get("metric", "val/mse"), list(search.get("space") or {})
    done = trials[trials["status"] == "completed"].copy()
    done["_value"] = pd.to_numeric(done.get(metric), errors="coerce")
    done = done[done["_value"].map(lambda v: math.isfinite(v) if v == v else False)]
    done = done.sort_values("_value", ascending=search.get("mode", "min") == "min",
                            kind="stable").head(k)
    extra = [m for m in search.get("table_metrics") or [] if m in done and m != metric]
    best = done[["trial", "seed", "epochs_done", *[f"config/{p}" for p in params], metric,
                 *extra]].rename(columns={f"config/{p}": p for p in params})
    best.index = pd.RangeIndex(1, len(best) + 1, name="rank")
    return best


def study_of(trials: pd.DataFrame, search: dict, statuses=("completed", "stopped early")):
    """An optuna.Study holding one finished trial per run trial of `statuses` that ended with
    a finite value (its last), with the space's distributions."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(search)
    metric = search.get("metric", "val/mse")
    study = optuna.create_study(
        direction="minimize" if search.get("mode", "min") == "min" else "maximize")
    kept = trials[trials["status"].isin(list(statuses))]
    for _, t in kept.iterrows():
        value = pd.to_numeric(t.get(metric), errors="coerce")
        params = {name: t.get(f"config/{name}") for name in distributions}
        if not (isinstance(value, float) and math.isfinite(value)) or any(
                v is None or (isinstance(v, float) and math.isnan(v)) for v in params.values()):
            continue
        params = {name: _native(v, distributions[name]) for name, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(value)))
    return study


def importances(trials: pd.DataFrame, search: dict, statuses=("completed", "stopped early")
                ) -> tuple[dict[str, float], int, str | None]:
    """{param: importance} over the trials of `statuses` (fANOVA, normalized: they sum to 1),
    most important first, and the number of trials they rest on; or ({}, n, why not) when
    they cannot be computed."""
    import optuna
    study = study_of(trials, search, statuses)
    n = len(study.trials)
    if n < 2:
        return {}, n, (f"parameter importances need at least 2 trials with a final "
                       f"{search.get('metric')}; this run has {n}.")
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            params=list(search["space"]))
    except (ValueError, RuntimeError) as e:
        return {}, n, f"parameter importances could not be computed: {e}"
    return {name: float(v) for name, v in found.items()}, n, None


def report_sections(trials: pd.DataFrame, search: dict) -> tuple[str, dict]:
    """The Markdown of both sections (for table.md and the printed report) and the files to
    write into report/ ({name: text})."""
    metric, mode = search.get("metric", "val/mse"), search.get("mode", "min")
    best = best_configs(trials, search)
    found, n_all, why = importances(trials, search)
    full, n_full, why_full = importances(trials, search, statuses=("completed",))
    counts = trials["status"].value_counts()
    shown = best.copy()
    for column in shown.columns:
        if column not in ("trial", "seed", "epochs_done"):
            shown[column] = [_fmt(v) for v in shown[column]]
    best_md = (f"## Best configurations ({len(best)} of {int(counts.get('completed', 0))} "
               f"completed trials, by final {metric}, {mode})\n\n"
               + (shown.to_markdown(disable_numparse=True) if len(best) else "none completed")
               + "\n")
    stopped = int(counts.get("stopped early", 0))
    if stopped:
        best_md += (f"\n{stopped} trial(s) stopped early by the scheduler are not ranked (their "
                    "last value is at fewer epochs).\n")
    table = pd.DataFrame({"param": list(found), "importance_all": list(found.values()),
                          "importance_completed": [full.get(p, math.nan) for p in found]})
    if found:
        shown = pd.DataFrame({
            "param": table["param"],
            f"all {n_all} trials": [f"{v:.3f}" for v in table["importance_all"]],
            f"{n_full} completed": ["—" if math.isnan(v) else f"{v:.3f}"
                                    for v in table["importance_completed"]]})
        imp_md = (f"## Parameter importances (Optuna fANOVA, seed 0, of the final {metric})\n\n"
                  + shown.to_markdown(index=False, disable_numparse=True)
                  + "\n\nAll trials: each with its last reported value, as Tune's OptunaSearch "
                    "told Optuna (a trial stopped early, with its value at that epoch, which "
                    "favours what learns fast); completed: the trials that ran the full budget."
                  + (f" Completed: {why_full}" if why_full else "") + "\n")
    else:
        imp_md = f"## Parameter importances\n\n{why}\n"
    files = {"best_configs.csv": best.to_csv(), "best_configs.md": best_md,
             "importances.csv": table.to_csv(index=False), "importances.md": imp_md}
    return best_md + "\n" + imp_md, files


def _distributions(search: dict) -> dict:
    import optuna
    return {name: optuna.distributions.json_to_distribution(text)
            for name, text in search["space"].items()}


def run_study(trials: pd.DataFrame, curves: pd.DataFrame, search: dict, storage=None):
    """The run as an Optuna study (in `storage`, a URL, else in memory): one Optuna trial
    per run trial with its sampled parameters, per-epoch values and state (module docstring),
    named after the run's search; user attributes: the trial folder, seed and status."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(search)
    metric = search.get("metric", "val/mse")
    study = optuna.create_study(
        storage=storage, study_name=search.get("name", "search"), load_if_exists=False,
        direction="minimize" if search.get("mode", "min") == "min" else "maximize")
    with warnings.catch_warnings():  # Optuna marks it experimental (its dashboard reads it)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    state = {"completed": optuna.trial.TrialState.COMPLETE,
             "stopped early": optuna.trial.TrialState.PRUNED,
             "diverged": optuna.trial.TrialState.FAIL, "error": optuna.trial.TrialState.FAIL}
    values = curves[curves["metric"] == metric] if len(curves) else curves
    made = []
    for _, t in trials.iterrows():
        params = {name: t.get(f"config/{name}") for name in distributions}
        if any(v is None or (isinstance(v, float) and math.isnan(v))
               for v in params.values()):
            continue  # a trial off the space (not sampled)
        params = {name: _native(v, distributions[name]) for name, v in params.items()}
        final = pd.to_numeric(t.get(metric), errors="coerce")
        this = state.get(t["status"], optuna.trial.TrialState.RUNNING)
        if this == optuna.trial.TrialState.COMPLETE and not (
                isinstance(final, float) and math.isfinite(final)):
            this = optuna.trial.TrialState.FAIL  # completed without a finite final value
        own = values[values["trial"] == t["trial"]] if len(values) else values
        steps = {int(e): float(v) for e, v in zip(own.get("epoch", []), own.get("value", []))
                 if isinstance(v, (int, float)) and math.isfinite(v)}
        made.append(optuna.trial.create_trial(
            params=params, distributions=distributions, state=this,
            value=float(final) if this == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values=steps,
            user_attrs={"trial": t["trial"], "seed": int(t["seed"]), "status": t["status"]}))
    study.add_trials(made)
    return study


def write_study(trials: pd.DataFrame, curves: pd.DataFrame, search: dict, path) -> None:
    """run_study into a new SQLite file at `path` (the caller renames it into place)."""
    import optuna
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    try:
        run_study(trials, curves, search, storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()  # the file is closed before it is renamed


def plot_writers(trials: pd.DataFrame, curves: pd.DataFrame, search: dict) -> dict:
    """{file name: writer(path)} of Optuna's importance plot (fANOVA, seed 0, over the trials
    the importance table's "all" column uses) and optimization history (the completed
    trials' final values and the best so far), where they can be drawn."""
    import optuna
    from optuna.visualization import matplotlib as plots
    metric = search.get("metric", "val/mse")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna marks its matplotlib plots experimental, with a warning at every call
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out = {}
    scored = study_of(trials, search)
    if len(scored.trials) >= 2:
        out.update(figures.writers("optuna_importances", lambda: _titled(
            plots.plot_param_importances(
                scored, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                params=list(search["space"]), target_name=metric),
            f"Parameter importances for the final {metric} (fANOVA)"), dpi=110))
    study = run_study(trials, curves, search)
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        out.update(figures.writers("optuna_history", lambda: _titled(
            plots.plot_optimization_history(study, target_name=metric),
            f"Optimization history: final {metric} of each completed trial"), dpi=110))
    return out


def _titled(ax, title: str):
    """Optuna's plot (drawn through pyplot) with our title, sized, and let go of by pyplot, so
    that the figure is saved as a PNG and a PDF and then freed with the others."""
    import matplotlib.pyplot as plt
    for loc in ("left", "center", "right"):  # Optuna's own title, whichever side it set
        ax.set_title("", loc=loc)
    ax.set_title(title, loc="left")
    fig = ax.figure
    fig.set_size_inches(7, 4)
    fig.tight_layout()
    plt.close(fig)  # pyplot forgets it; it still saves
    return fig


def _native(value, distribution):
    """A trials.csv cell as the distribution's own type (an int stays an int)."""
    import optuna
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return int(value)
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return float(value)
    choices = distribution.choices
    return next((c for c in choices if str(c) == str(value) or c == value), value)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)
