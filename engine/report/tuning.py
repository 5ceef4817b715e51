"""The report of a sampled search (--search optuna): its best configurations and Optuna's
parameter importances, from the run folder alone (like engine/report/__init__.py: no Ray, no torch).

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
"""
from __future__ import annotations

import math

import pandas as pd

TOP_K = 5
FILES = ("best_configs.csv", "best_configs.md", "importances.csv", "importances.md")


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
    distributions = {name: optuna.distributions.json_to_distribution(text)
                     for name, text in search["space"].items()}
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
