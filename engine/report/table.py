"""The ablation table: one row per configuration (engine/report/rows.py), per metric the mean,
std, 95% interval and seeds over the completed trials, the paper's numbers beside them where
they compare (paper_numbers), the trials' counts by status, the "real data" floor row, and the
notes a reader must know (engine/report/notes.py, engine/report/convergence.py); format_table
turns it into the cells the Markdown and LaTeX tables show (engine/report/display.py rounds and
marks them).
"""
from __future__ import annotations

import math

import pandas as pd

from engine.report import display, evaluations, stats
from engine.report.convergence import convergence_notes
from engine.report.notes import (evaluation_notes, floor_notes, order_legend, order_notes,
                                 preset_notes, resolution_notes, status_notes)
from engine.report.read import number, same
from engine.report.rows import COUNTS, FLOOR_ROW, NOT_CONVERGED, row_groups


def ablation_table(trials: pd.DataFrame, search: dict) -> pd.DataFrame:
    """The ablation table: one row per configuration (label + every config field, not the
    seed), in the search's row order, index = label (with the fields that tell apart rows
    sharing a label). Columns per metric "<m> mean", "<m> std" (ddof=1, over completed trials)
    and "<m> (paper)" where the paper compares, then the counts n (completed), diverged,
    stopped early, errors, unfinished. table.attrs["notes"] lists what a reader must know
    (why no paper numbers, metrics missing, no trial completed, ...); table.attrs["dataset"]
    names the data set for format_table."""
    groups = row_groups(trials, search)
    metrics = _table_metrics(trials, search)
    published, notes = paper_numbers(search, [(g["label"], g["config"]) for g in groups], metrics)
    declared = list(search.get("table_metrics") or [])
    if declared and not set(metrics) & set(declared) and metrics:
        notes = [f"none of the table's metrics ({', '.join(declared)}) was computed (the run's "
                 "evaluation: --eval); the table shows what the trials logged instead: "
                 f"{', '.join(metrics)}"] + notes
    records = []
    for g in groups:
        sub = trials.loc[g["index"]]
        done = sub[sub["status"] == "completed"]
        record = {}
        for m in metrics:
            values = pd.to_numeric(done[m], errors="coerce") if m in done else pd.Series(
                dtype=float)
            record[f"{m} mean"] = values.mean()
            record[f"{m} std"] = values.std(ddof=1)  # NaN for one seed, never a fake 0
            record[f"{m} ci95"] = stats.ci_halfwidth(record[f"{m} std"], values.count())
            record[f"{m} n"] = int(values.count())  # a seed may lack one metric (not computed)
            if m in published.get("metrics", ()):
                record[f"{m} (paper)"] = number(published["numbers"].get(g["label"], {}).get(m))
        record["n"] = len(done)
        # == False, not ~: None (too few epochs to tell) is not "not converged"
        record[NOT_CONVERGED] = int((done["converged"] == False).sum())  # noqa: E712
        for status, column in COUNTS.items():
            record[column] = int((sub["status"] == status).sum())
        records.append(record)
    columns = [f"{m} {part}" for m in metrics for part in ("mean", "std", "ci95", "n", "(paper)")
               if part != "(paper)" or m in published.get("metrics", ())]
    names = [g["name"] for g in groups]
    floor = _floor_record(trials, metrics)
    floor_name = FLOOR_ROW
    while floor_name in names:  # a search row of that name keeps it
        floor_name += " (floor)"
    if floor:  # what real data scores at the evaluation's sizes: how far each row is from it
        records.append({**floor, "n": 0, NOT_CONVERGED: 0, **{c: 0 for c in COUNTS.values()}})
        names.append(floor_name)
    table = pd.DataFrame.from_records(records, columns=[*columns, "n", NOT_CONVERGED,
                                                        *COUNTS.values()],
                                      index=pd.Index(names, name="label"))
    table.attrs["floor"] = floor_name if floor else None
    table.attrs["dataset"] = str(search.get("dataset", ""))
    table.attrs["metric"], table.attrs["mode"] = search.get("metric"), search.get("mode")
    table.attrs["notes"] = (notes + preset_notes(groups, search.get("rows") or [])
                            + order_legend(order_notes(table, search))
                            + floor_notes(trials, table)
                            + evaluation_notes(trials, metrics)
                            + evaluations.notes(trials, search, metrics)
                            + convergence_notes(trials, groups)
                            + status_notes(trials, groups, table, search.get("rows") or [])
                            + ([display.best_note()] if metrics else [])
                            + resolution_notes(table))
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table for display: cells "0.01471 ± 0.0006" (the mean ± the half-width of its 95%
    interval, rounded to it: engine/report/display.py) followed by the column's compact letters
    where the seeds resolve any pair ("0.01471 ± 0.0006 ab"), "0.008000 (n=1)", "—" where no
    trial completed, the floor row's values plain, with columns (dataset, display name: "FID
    (rec.) ↓") as the papers lay them out, then (trials, count) for the counts that are not all
    zero. attrs["bold"]: the (row, column) positions of each column's best within noise, which
    the Markdown and LaTeX tables set in bold."""
    dataset = table.attrs.get("dataset", "")
    floor = table.attrs.get("floor")
    columns: dict[tuple[str, str], list[str]] = {}
    bold: set[tuple[int, int]] = set()
    position = {row: i for i, row in enumerate(table.index)}
    for metric, (name, better, column) in display.comparisons(table).items():
        mean, n = table[f"{metric} mean"], display.seeds(table, metric)
        std = table.get(f"{metric} std", pd.Series(math.nan, index=table.index))
        ci = (table[f"{metric} ci95"] if f"{metric} ci95" in table else pd.Series(
            [stats.ci_halfwidth(s, k) for s, k in zip(std, n)], index=table.index))
        if better is not None:
            bold |= {(position[row], len(columns)) for row in column.bold}
        resolved = len({ch for text in column.letters.values() for ch in text}) > 1
        cells = []
        for row, m, half, k in zip(table.index, mean, ci, n):
            if row == floor:
                cells.append("—" if pd.isna(m) else display.significant(m))
                continue
            text = display.cell(m, half, k)
            if resolved and column.letters.get(row):
                text += f" {column.letters[row]}"
            cells.append(text)
        columns[(dataset, name)] = cells
        if f"{metric} (paper)" in table:
            columns[(dataset, f"{name} (paper)")] = [
                "" if pd.isna(v) else f"{v:g}" for v in table[f"{metric} (paper)"]]  # as published
    for column_name in ["n", NOT_CONVERGED, *COUNTS.values()]:
        if column_name == "n" or table[column_name].any():
            columns[("trials", column_name)] = [
                "" if row == floor else str(int(v)) for row, v in zip(table.index,
                                                                      table[column_name])]
    shown = pd.DataFrame(columns, index=table.index)
    shown.columns = pd.MultiIndex.from_tuples(list(columns), names=["dataset", "metric"])
    shown.attrs["bold"] = bold
    return shown


def paper_numbers(search: dict, rows: list[tuple[str, dict]],
                  metrics: list[str]) -> tuple[dict, list[str]]:
    """The paper's numbers for this run's data set, {"numbers": {label: {metric: v}}, "metrics":
    [...]}, when they compare (same data set, every row at the paper's setting); else {}. And
    the notes that say which, and which of the paper's metrics this run lacks."""
    paper = search.get("paper")
    if not paper:
        return {}, []
    source = paper.get("source") or "the paper"
    numbers = paper.get("numbers") or {}
    dataset = search.get("dataset")
    if dataset not in numbers:
        return {}, [f"{source} reports {', '.join(numbers) or 'no data set'}; this run is on "
                    f"{dataset}, so no published numbers stand beside ours."]
    published = numbers[dataset]
    reported = list(dict.fromkeys(m for row in published.values() for m in row))
    notes = [f"the paper's {m} is not computed in this run." for m in reported if m not in metrics]
    setting = paper.get("setting") or {}
    if isinstance(setting.get(dataset), dict):  # a setting per data set (e.g. latent sizes)
        setting = setting[dataset]
    off = [f"{label} has {k}={config.get(k)}" for label, config in rows
           for k, v in setting.items() if not same(config.get(k), v)]
    at = ", ".join(f"{k}={v}" for k, v in setting.items())
    if off:
        more = f" and {len(off) - 3} more" if len(off) > 3 else ""
        return {}, [f"{source} is at {at}, but {'; '.join(off[:3])}{more}, so no published "
                    "numbers stand beside ours.", *notes]
    notes.insert(0, f"the (paper) columns are {source} on {dataset}"
                    + (f", at {at}." if at else "."))
    missing = sorted({str(label) for label, _ in rows if label not in published})
    if missing:
        notes.append(f"{source} has no {dataset} numbers for {', '.join(missing)}.")
    return {"numbers": published, "metrics": [m for m in reported if m in metrics]}, notes


def _table_metrics(trials: pd.DataFrame, search: dict) -> list[str]:
    """The search's table metrics (else its search metric), each FID followed by its KID
    where the trials have one (unbiased where FID is not: small reference sets) and, where
    the FID is Inception's raw one, the standardized FID and KID (fidz, kidz), then every
    other metric reported that the paper has numbers for; trials.csv has every metric."""
    declared = evaluations.table_metrics(  # and those a later evaluation added
        trials, list(search.get("table_metrics") or [search.get("metric", "val/mse")]))
    metrics = []
    for m in declared:
        metrics.append(m)
        if not m.startswith("eval/fid_"):
            continue
        # its KID, and where the raw FID is Inception's, the standardized FID and KID
        for score in ("kid", "fidz", "kidz"):
            other = m.replace("eval/fid_", f"eval/{score}_", 1)
            if other in trials.columns and other not in declared:
                metrics.append(other)
    numbers = (search.get("paper") or {}).get("numbers") or {}
    published = {m for rows in numbers.values() for row in rows.values() for m in row}
    metrics += sorted(c for c in trials.columns if c in published and c not in metrics)
    if not any(_has_values(trials, m) for m in metrics):  # e.g. --eval none: a table of
        return _logged_metrics(trials, search) or metrics  # dashes said nothing they knew
    return metrics


def _has_values(trials: pd.DataFrame, metric: str) -> bool:
    return metric in trials and pd.to_numeric(trials[metric], errors="coerce").notna().any()


def _logged_metrics(trials: pd.DataFrame, search: dict) -> list[str]:
    """What the trials logged every epoch and at the end without the evaluation suite: the
    search metric first, then the other val/ and test/ metrics with a value."""
    first = search.get("metric", "val/mse")
    logged = [c for c in trials.columns if c.startswith(("val/", "test/")) and c != first
              and _has_values(trials, c)]
    return [m for m in [first, *logged] if _has_values(trials, m)]


def _floor_record(trials: pd.DataFrame, metrics: list[str]) -> dict:
    """The "real data" row: for each FID or KID column eval/<score>_<set>, the mean over the
    completed trials of eval/floor_<score>_<set> (the evaluation's real images against the
    same reference, at the same sizes: one value per data set and size, so every trial
    reports the same); {} where no trial reports a floor."""
    done = trials[trials["status"] == "completed"] if len(trials) else trials
    record = {}
    for m in metrics:
        floor = m.replace("eval/", "eval/floor_", 1)
        if m.startswith(("eval/fid", "eval/kid")) and floor in done:
            values = pd.to_numeric(done[floor], errors="coerce").dropna()
            if len(values):
                record[f"{m} mean"] = values.mean()
    return record
