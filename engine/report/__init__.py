"""Reports of a run folder, finished or partial: one tidy row per trial, the per-epoch curves,
the ablation table (mean ± std over seeds, the paper's numbers beside ours when they compare),
as CSV / Parquet / Markdown / LaTeX, and two plots.

    python -m engine report runs/ablation_uae

It reads only what the engine writes (search.json, each trial's params.json, result.json,
evaluation.json and error.txt, finished.json), imports neither Ray nor torch, so it runs
wherever a run folder was copied to, and never branches on a model's name: a table row is a
label plus a config. The figures are drawn in engine/report/figures.py, the Markdown and LaTeX
written in engine/report/formats.py, a later evaluation merged by engine/report/evaluations.py.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from engine.convergence import CONVERGENCE_TOL, CONVERGENCE_WINDOW, WATCHED, still_moving
from engine.report import display, evaluations, figures, qualitative, stats, tuning
from engine.report.figures import bar_figure as _bar_figure, curves_figure as _curves_figure
from engine.report.figures import save_figure  # noqa: F401  (the studies' own figures)
from engine.report.formats import latex_table as _latex_table, markdown as _markdown
from engine.files import STOPPED_FILE, link_problem, write_atomic
from engine.trial_files import lines_problem, params_problem, read_lines

# status -> the table's count column
COUNTS = {"diverged": "diverged", "stopped early": "stopped early", "error": "errors",
          "unfinished": "unfinished"}
REPORT_FILES = ("table.md", "table.tex", "table.csv", "trials.csv", "trials.parquet",
                "curves.csv", "val_curves.png", "val_curves.pdf", "final_bar.png", "final_bar.pdf")
CURVE_COLUMNS = ["trial", "label", "seed", "epoch", "metric", "value"]
# A completed trial has converged when its curves have flattened (engine/convergence.py, the
# rule --epochs auto stops at). A trial cut short by its budget is compared with the others
# as if it had finished; the table counts such trials and a note names them, so a reader knows
# which places may still change.
NOT_CONVERGED = "not converged"
FLOOR_ROW = "real data"  # the table's floor row (FID and KID of real images)
SEEDS_SHOWN = (5, 10, 20)  # seed counts the resolution note says how many pairs each resolves


class NotARunFolder(ValueError):
    """The folder has no readable search.json; the message is one line."""


def load_search(run_dir) -> dict:
    """The search's description (search.json): name, dataset, epochs, seeds, rows, paper, ..."""
    path = Path(run_dir) / "search.json"
    if not path.is_file():
        raise NotARunFolder(f"{run_dir} is not a run folder (no search.json); give the folder a "
                            "search wrote, the one holding search.json and a sub-folder per trial")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NotARunFolder(f"{path} cannot be read as JSON ({e})") from None


def load_trials(run_dir) -> pd.DataFrame:
    """One row per trial: trial, trial_id, label, seed, config/<field>..., status, epochs_done,
    error, the metrics of its last reported line (val/mse, test/psnr, ...), time_total_s.
    Sorted by the search's row order, then seed."""
    run = Path(run_dir)
    search = load_search(run)
    records, left_out = [], []
    for folder, params, lines in _read_trials(run, search, left_out):
        last = evaluations.merged(folder, lines[-1] if lines else {})  # and its evaluation.json
        config = params.get("config") or {}
        epochs_done = _epoch(last) if last else 0
        error = _error_message(folder / "error.txt")
        records.append({
            "trial": folder.name, "trial_id": last.get("trial_id"),
            "label": _label(params, folder), "seed": params.get("seed"),
            **{f"config/{k}": _scalar(v) for k, v in config.items()},
            "status": _status(last, error is not None, (folder / STOPPED_FILE).is_file()),
            "epochs_done": epochs_done, "error": error,
            "diverged_at_epoch": last.get("diverged_at_epoch"),
            "end_reason": last.get("end_reason"),  # --epochs auto: plateau or cap
            **(_convergence(lines, search) if last.get("status") == "completed"
               else {"converged": None, "still_moving": None}),
            "eval_notes": json.dumps(last["notes"]) if isinstance(last.get("notes"), dict)
            else None,
            evaluations.KEY: last.get(evaluations.KEY),
            **_metrics(last),
            "time_total_s": _num(last.get("time_total_s")),
        })
    # columns in a fixed order: trials report different metrics (test/ only at the end)
    found = list(dict.fromkeys(k for r in records for k in r))
    metrics = sorted(k for k in found if "/" in k and not k.startswith("config/"))
    columns = ["trial", "trial_id", "label", "seed",
               *[k for k in found if k.startswith("config/")],
               "status", "epochs_done", "error", "diverged_at_epoch", "end_reason", "converged",
               "still_moving", *metrics, "time_total_s", "eval_notes", evaluations.KEY]
    trials = pd.DataFrame.from_records(records, columns=columns)
    trials.attrs["left_out"] = left_out  # damaged trial folders, one line each
    return trials


def load_curves(run_dir) -> pd.DataFrame:
    """Every per-epoch numeric metric of every trial, long: trial, label, seed, epoch, metric,
    value (null and NaN reports are kept as NaN)."""
    run = Path(run_dir)
    rows = [(folder.name, _label(params, folder), params.get("seed"), _epoch(line), metric, value)
            for folder, params, lines in _read_trials(run, load_search(run))
            for line in lines for metric, value in _metrics(line).items()]
    curves = pd.DataFrame(rows, columns=CURVE_COLUMNS).astype({"epoch": int, "value": float})
    # a restored trial reports again the epochs after its last checkpoint: the later one counts
    return curves.drop_duplicates(["trial", "epoch", "metric"], keep="last", ignore_index=True)


def ablation_table(trials: pd.DataFrame, search: dict) -> pd.DataFrame:
    """The ablation table: one row per configuration (label + every config field, not the
    seed), in the search's row order, index = label (with the fields that tell apart rows
    sharing a label). Columns per metric "<m> mean", "<m> std" (ddof=1, over completed trials)
    and "<m> (paper)" where the paper compares, then the counts n (completed), diverged,
    stopped early, errors, unfinished. table.attrs["notes"] lists what a reader must know
    (why no paper numbers, metrics missing, no trial completed, ...); table.attrs["dataset"]
    names the data set for format_table."""
    groups = _groups(trials, search)
    metrics = _table_metrics(trials, search)
    published, notes = _paper(search, [(g["label"], g["config"]) for g in groups], metrics)
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
                record[f"{m} (paper)"] = _num(published["numbers"].get(g["label"], {}).get(m))
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
    table.attrs["notes"] = (notes + _preset_notes(groups, search.get("rows") or [])
                            + _order_legend(_order_notes(table, search))
                            + _floor_notes(trials, table)
                            + _evaluation_notes(trials, metrics)
                            + evaluations.notes(trials, search, metrics)
                            + _convergence_notes(trials, groups)
                            + _status_notes(trials, groups, table, search.get("rows") or [])
                            + ([display.best_note()] if metrics else [])
                            + _resolution_notes(table))
    return table


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


def _floor_notes(trials: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    if not table.attrs.get("floor"):
        return []
    return [f"{FLOOR_ROW}: what real images score on each FID and KID column, measured like "
            "the rows (real images disjoint from the reference, as many as each column's "
            "generated or reconstructed set, against the same reference): the value real "
            "images reach at these sizes, which the rows are read against. Samples and "
            "interpolations cannot be expected below it; reconstructions can, being the "
            "reference images' own."]


def _resolution_notes(table: pd.DataFrame) -> list[str]:
    """Per column with a direction, a note: how many adjacent pairs (in the mean's order) the
    seeds resolve, how many of the rest 5, 10 or 20 seeds per row would, and the seeds the
    hardest one needs."""
    notes = []
    rows = table.drop(index=[table.attrs["floor"]]) if table.attrs.get("floor") else table
    for metric, (name, better, column) in display.comparisons(table).items():
        if better is None or len(column.tested) < 2:
            continue
        adjacent = list(zip(column.tested, column.tested[1:]))
        resolved = sum(bool(column.differ(a, b)) for a, b in adjacent)
        text = (f"{name}: {resolved} of {len(adjacent)} adjacent pairs resolved "
                f"({int(column.pairs['differ'].sum())} of {len(column.pairs)} in all)")
        left = stats.unresolved_adjacent(column, rows[f"{metric} mean"], rows[f"{metric} std"])
        if left:
            counts = [sum(k <= cap for *_, k in left) for cap in SEEDS_SHOWN]
            a, b, need = left[0]
            text += (f"; {'/'.join(map(str, SEEDS_SHOWN))} seeds per row would resolve "
                     f"{'/'.join(map(str, counts))} of the {len(left)} unresolved; the hardest, "
                     f"{a} against {b}: {stats.describe_seeds(need)}")
        notes.append(text + ".")
    if not notes:
        return []
    return ["resolved pairs: Welch's t-tests, Holm over each column's pairs; the seeds that "
            f"would resolve a pair: {stats.POWER:.0%} power if the observed means and spread were "
            f"the true ones, at Bonferroni's {stats.LEVEL:g}/pairs (Holm rejects whatever it "
            "does); a planning figure, as noisy as the gap and spread it starts from."] + notes


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
                cells.append("—" if pd.isna(m) else display._sig(m))
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


def write_report(run_dir) -> str:
    """Write <run>/report/ (table.md, table.tex, table.csv, trials.csv, trials.parquet,
    curves.csv, val_curves and final_bar as PNG and PDF; for a sampled search also its best
    configurations and parameter importances, engine/report/tuning.py), each file atomically, and
    return the text to print: a title line, the Markdown table, its notes, the trials'
    statuses, where the files are."""
    run = Path(run_dir)
    search = load_search(run)
    problem = link_problem(run)
    if problem:  # report/ (or a file in it) planted as a link: nothing written through it
        raise NotARunFolder(problem)
    if (run / "report").exists() and not (run / "report").is_dir():
        raise NotARunFolder(f"{run / 'report'} is a file, where the report's folder goes; move "
                            "it away")
    trials, curves = load_trials(run), load_curves(run)
    table = ablation_table(trials, search)
    shown = format_table(table)
    # a damaged trial folder costs the report that trial only, and says so
    left_out = [f"left out of every table and figure, damaged (mend the file, or move the "
                f"trial's folder away and --resume to train it again): {x}"
                for x in trials.attrs.get("left_out", [])]
    notes = (left_out + table.attrs["notes"] + _stability_notes(curves, trials, search)
             + _projection_notes(curves, trials, search))
    title = _title(search, (run / "finished.json").is_file())
    markdown = _markdown(shown)
    note_lines = "".join(f"- {n}\n" for n in notes)
    names = {trial: g["name"] for g in _groups(trials, search)
             for trial in trials.loc[g["index"], "trial"]}
    sections, texts = (tuning.report_sections(trials, search) if tuning.is_sampled(search)
                       else ("", {}))  # a sampled search: its best configurations, importances
    files = [*REPORT_FILES, *texts]
    out = run / "report"
    out.mkdir(exist_ok=True)
    writers: dict[str, Callable[[Path], object]] = {
        "table.md": lambda p: p.write_text(f"# {title}\n\n{markdown}\n\n{note_lines}"
                                           + (f"\n{sections}" if sections else "")),
        "table.tex": lambda p: p.write_text(_latex_table(shown, notes, title,
                                                         f"tab:{search.get('name', 'search')}")),
        "table.csv": lambda p: table.to_csv(p),
        "trials.csv": lambda p: trials.to_csv(p, index=False),
        "trials.parquet": lambda p: trials.to_parquet(p, index=False),
        "curves.csv": lambda p: curves.to_csv(p, index=False),
        **figures.writers("val_curves", lambda: _curves_figure(curves, names, table.index,
                                                               search), dpi=120),
        **figures.writers("final_bar", lambda: _bar_figure(table, search, trials, names),
                          dpi=120),
    }
    writers.update({name: (lambda p, t=text: p.write_text(t)) for name, text in texts.items()})
    for name, write in writers.items():
        write_atomic(out / name, write)
    # what must not cost the report its tables where it cannot be drawn (e.g. fANOVA on
    # trials that all scored the same): said in a line instead
    extra: dict[str, Callable[[Path], object]] = {}
    pictures = _qualitative_rows(run, trials, search)
    if pictures:  # the trials' own pictures, a band per row (engine/report/qualitative.py)
        extra.update({f"report/{name}": write for name, write in figures.writers(
            "qualitative", lambda: qualitative.figure(pictures, _picture_title(
                search, pictures, trials)), dpi="figure").items()})
    if tuning.is_sampled(search):  # Optuna's own plots, and the study for its dashboard
        extra.update({f"report/{name}": write for name, write
                      in tuning.plot_writers(trials, curves, search).items()})
        extra[tuning.STUDY_FILE] = lambda p: tuning.write_study(trials, curves, search, p)
    unwritten = []
    for name, write in extra.items():
        try:
            write_atomic(run / name, write)
            files.append(name.removeprefix("report/") if "/" in name else f"../{name}")
        except Exception as e:  # noqa: BLE001
            unwritten.append(f"{name} not written: {type(e).__name__}: {e}")
    return "\n\n".join([title, markdown, note_lines.rstrip("\n"), *([sections.rstrip("\n")]
                                                                      if sections else []),
                        _status_text(trials) + f"\nfiles: {out}/ ({', '.join(files)})"
                        + "".join(f"\n{line}" for line in unwritten)])


def _qualitative_rows(run: Path, trials: pd.DataFrame, search: dict) -> list[tuple]:
    """(row name, strips) per table row, in the table's order, of the row's lowest-seed
    completed trial that saved its pictures."""
    if not len(trials):
        return []
    out = []
    for g in _groups(trials, search):
        done = trials.loc[g["index"]]
        done = done[done["status"] == "completed"].sort_values("seed", kind="stable")
        for _, t in done.iterrows():
            strips = qualitative.load_strips(run / t["trial"])
            if strips:
                out.append((f"{g['name']}\nseed {t['seed']}", strips))
                break
    return out


def _picture_title(search: dict, pictures: list, trials: pd.DataFrame) -> str:
    shown = len(pictures)
    rows = len({g["name"] for g in _groups(trials, search)})
    missing = (f"; {rows - shown} row(s) with no completed trial that saved its pictures are "
               "left out") if rows > shown else ""
    return (f"{search.get('name')} on {search.get('dataset')}: each row's lowest-seed completed "
            f"trial at its last epoch{missing}")


# --- reading the run folder ---------------------------------------------------------------

def _read_trials(run: Path, search: dict, left_out: list[str] | None = None
                 ) -> list[tuple[Path, dict, list[dict]]]:
    """(folder, params, result lines) of every trial, in the search's row order, then seed.
    A trial whose params.json or result lines are damaged (engine/trial_files.py) is left out,
    one line naming its file and field appended to `left_out`."""
    trials = []
    for folder in _trial_dirs(run):
        try:
            params = json.loads((folder / "params.json").read_text())
        except (OSError, ValueError):
            continue  # a trial that is starting right now has not finished writing it
        lines = read_lines(folder / "result.json")
        for name, problem in (("params.json", params_problem(params)),
                              ("result.json", None if not isinstance(params, dict)
                               else lines_problem(lines, search.get("metric", "val/mse")))):
            if problem:
                if left_out is not None:
                    left_out.append(f"{folder / name}: {problem}")
                break
        else:
            trials.append((folder, params, lines))
    rows = search.get("rows") or []

    def order(item):
        folder, params, _ = item
        seed = params.get("seed")
        return (_match_row(_label(params, folder), params.get("config") or {}, rows)[0],
                str(_label(params, folder)), (seed is None, seed if seed is not None else 0),
                folder.name)
    return sorted(trials, key=order)


def damaged_trials(run_dir) -> list[str]:
    """One line per trial folder whose params.json or result.json is damaged (file, field)."""
    run = Path(run_dir)
    left_out: list[str] = []
    _read_trials(run, load_search(run), left_out)
    return left_out


def _trial_dirs(run: Path) -> list[Path]:
    """The folders that hold a params.json, outermost only (a trial's own sub-folders, such as
    checkpoints, are not trials), whatever Tune named them."""
    found = []
    for root, dirs, files in os.walk(run):
        if Path(root) != run and "params.json" in files:
            found.append(Path(root))
            dirs.clear()
        elif Path(root) == run and "report" in dirs:
            dirs.remove("report")
    return found


def _error_message(path: Path) -> str | None:
    """The last non-empty line of error.txt (a traceback ends with the exception)."""
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "error (error.txt is empty)"


def _status(last: dict, errored: bool, stopped: bool) -> str:
    reported = last.get("status")
    if reported in ("completed", "diverged"):
        return reported
    if errored:
        return "error"
    if stopped:
        return "stopped early"  # the scheduler (ASHA) stopped it: engine/ray_backend
    return "unfinished"  # the search is running or was interrupted


def _metrics(line: dict) -> dict[str, float]:
    """The namespaced numbers of one result line ("val/mse", "test/psnr", ...); Tune's own
    fields have no "/", and a nested config would come flattened as "config/..."."""
    return {k: _num(v) for k, v in line.items()
            if "/" in k and not k.startswith("config/") and (v is None or _is_number(v))}


def _epoch(line: dict) -> int:
    return int(line.get("epoch", line.get("training_iteration", 0)) or 0)


def _label(params: dict, folder: Path) -> str:
    return params.get("label") or (params.get("config") or {}).get("name") or folder.name


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(v) -> float:
    return float(v) if _is_number(v) else math.nan


def _scalar(v):
    """A config value as a table cell: lists and dicts as JSON text, so rows can be grouped."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def _same(a, b) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _match_row(label, config: dict, rows: list[dict]) -> tuple[int, bool]:
    """The trial's position among search.json's rows and whether its config is the row's:
    the row of the same label and the same value of every field both configs have, so two
    rows that share a label (a beta sweep) stay apart; else the first row of the label (a
    sampled search varies its row's config); else after all rows."""
    of_label = [i for i, row in enumerate(rows) if row.get("label") == label]
    for i in of_label:
        if all(_same(_scalar(v), _scalar(config[k]))
               for k, v in (rows[i].get("config") or {}).items() if k in config):
            return i, True
    return (of_label[0], False) if of_label else (len(rows), False)


# --- the ablation table -------------------------------------------------------------------

def _groups(trials: pd.DataFrame, search: dict) -> list[dict]:
    """The table's rows: trials grouped by label and every config field (not the seed), plus
    the search's rows that no trial has reached yet, in the search's row order. Each is a dict:
    name (shown), label, config, index (the trials' index labels), row (position in
    search.json's rows), exact (its config is that row's)."""
    config_cols = [c for c in trials.columns if c.startswith("config/")]
    found: dict[tuple, dict] = {}
    for i, row in trials.iterrows():
        values = [None if _missing(row[c]) else row[c] for c in config_cols]
        key = (row["label"], *values)
        if key not in found:
            config = {c[len("config/"):]: v for c, v in zip(config_cols, values) if v is not None}
            found[key] = {"label": row["label"], "config": config, "index": []}
        found[key]["index"].append(i)
    rows = search.get("rows") or []
    groups = list(found.values())
    for g in groups:
        g["row"], g["exact"] = _match_row(g["label"], g["config"], rows)
    reached = {g["row"] for g in groups}
    groups += [{"label": row.get("label"), "config": row.get("config") or {}, "index": [],
                "row": i, "exact": True} for i, row in enumerate(rows) if i not in reached]
    groups.sort(key=lambda g: g["row"])  # stable: unmatched groups keep their first appearance
    for g, name in zip(groups, _row_names([(g["label"], g["config"]) for g in groups])):
        g["name"] = name
    return groups


def _preset_notes(groups: list[dict], rows: list[dict]) -> list[str]:
    """One note naming the rows that run a preset of another name than their label (search.json
    rows' "preset"), e.g. the paper's row "UAE" as the authors' code computes it ("UAE-code"):
    a reader must know which reading a row with the paper's name is."""
    other = [(g["name"], rows[g["row"]]["preset"]) for g in groups
             if g["row"] < len(rows) and rows[g["row"]].get("preset") not in (None, g["label"])]
    if not other:
        return []
    return ["rows that run a preset of another name (models/presets.py says what each "
            "follows): " + ", ".join(f"{row} runs {preset}" for row, preset in other) + "."]


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _row_names(rows: list[tuple[str, dict]]) -> list[str]:
    """Each row's label, plus the config fields that tell apart rows sharing it: a beta sweep
    of "VAE" reads "VAE (beta=0.5)", "VAE (beta=1)"."""
    names = []
    for label, config in rows:
        twins = [c for other, c in rows if other == label]
        fields = sorted(set().union(*twins)) if len(twins) > 1 else []
        differ = [k for k in fields if len({json.dumps(c.get(k), default=str) for c in twins}) > 1]
        shown = ", ".join(f"{k}={_short(config.get(k))}" for k in differ)
        names.append(f"{label} ({shown})" if shown else str(label))
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # still equal only if their configs are: number them
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} [{seen[name]}]"
    return names


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


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


def _evaluation_notes(trials: pd.DataFrame, metrics: list[str]) -> list[str]:
    """What the evaluation said about the table's metrics: the feature space FID was computed
    in, and why a metric (or a group) could not be computed, with how many trials said so."""
    said: dict[tuple[str, str], int] = {}
    for text in trials.get("eval_notes", pd.Series(dtype=object)).dropna():
        for key, reason in json.loads(text).items():
            said[(key, reason)] = said.get((key, reason), 0) + 1
    groups = ("reconstruction", "fid", "latent", "likelihood", "diagnostics", "variance")
    notes = []
    for (key, reason), n in said.items():
        wanted = (key in ("features", "floor") and any("fid" in m or "precision" in m
                                                        or "recall" in m for m in metrics)) \
            or key in metrics or key in groups or (key.endswith("*") and any(
                m.startswith(key[:-1]) for m in metrics))
        if not wanted:
            continue
        who = f" ({n} trial{'s' if n > 1 else ''})"
        notes.append(f"FID, precision and recall in {reason}{who}." if key == "features"
                     else f"{FLOOR_ROW} row: {reason}{who}." if key == "floor"
                     else f"{key} not computed{who}: {reason}")
    return notes


def _paper(search: dict, rows: list[tuple[str, dict]],
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
           for k, v in setting.items() if not _same(config.get(k), v)]
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


def _order_legend(notes: list[str]) -> list[str]:
    """The order sentences, with one line saying what "resolved" means in them."""
    if not any("resolved by the seeds" in note for note in notes):
        return notes
    return notes + ["a paper's order: a pair is resolved by the seeds where Welch's t-test, "
                    "Holm-corrected over that order's own pairs (a family the paper fixed, "
                    f"not the table), rejects equal means at {stats.LEVEL:g}; the table's "
                    "letters correct over every pair of their column, so an order may resolve "
                    "a pair whose rows share a letter."]


def _order_notes(table: pd.DataFrame, search: dict) -> list[str]:
    """The paper's ordering of rows beside ours: a sentence per entry of paper["orders"], each
    {"metric": m or {label: m}, "what": its name in the sentence, and either "ascending": the
    labels in the order the paper's text claims (with "claim", where it says so), or "rows":
    the labels to order by the paper's numbers on each of its data sets (only the run's own
    where the paper has it; default: every row it has), and optionally "caveat": why the
    comparison says little, appended to its sentence}. Ours are the rows' means on the run's
    data set; ties keep the paper's order, so they count as agreeing. Each sentence says how
    many of its pairs (and of the swapped ones) the seeds resolve, by Welch's test with Holm's
    correction over the claim's own pairs (stats.resolve_claim; the letters correct over the
    column's): an order the seeds do not resolve is not a finding."""
    paper = search.get("paper") or {}
    numbers, dataset = paper.get("numbers") or {}, search.get("dataset")
    notes = []
    for spec in paper.get("orders") or []:
        metric = spec["metric"]
        of = metric.get if isinstance(metric, dict) else (lambda label, m=metric: m)
        source = paper.get("source") or "the paper"
        if "ascending" in spec:
            claims = [(spec.get("claim") or source, list(spec["ascending"]))]
        else:
            claims = []
            for ds in [dataset] if dataset in numbers else list(numbers):
                values = {label: _num(numbers[ds].get(label, {}).get(of(label)))
                          for label in spec.get("rows") or numbers[ds]}
                claims.append((f"{source} on {ds}", sorted(
                    (k for k, v in values.items() if not math.isnan(v)), key=values.get)))
        for claim, theirs in claims:
            theirs = [label for label in theirs if label in table.index]
            if len(theirs) < 2:
                continue
            ours = {label: _num(table[f"{of(label)} mean"].get(label)) if f"{of(label)} mean"
                    in table else math.nan for label in theirs}
            # a sweep's labels share a stem ("stochastic log σx²="): named once
            stem = os.path.commonprefix(theirs)
            stem = stem[:max(stem.rfind("="), stem.rfind(" ")) + 1]
            short = {label: label[len(stem):] for label in theirs}
            head = (f"order {f'of {stem}… ' if stem else ''}by {spec.get('what') or metric} "
                    f"(ascending), {claim}: {' < '.join(map(short.get, theirs))}; ours on "
                    f"{dataset}: ")
            # a row without a value (every seed diverged, say) leaves the others' order to
            # compare; it is named, so the reader knows the sentence is over fewer rows
            missing = [label for label, v in ours.items() if math.isnan(v)]
            theirs = [label for label in theirs if label not in missing]
            if len(theirs) < 2:
                notes.append(f"{head}not comparable, no value for {', '.join(missing)}.")
                continue
            if missing:
                head += f"without {', '.join(map(short.get, missing))} (no value), "
            mine = sorted(theirs, key=lambda label: (ours[label], theirs.index(label)))
            swapped = [(a, b) for i, a in enumerate(theirs) for b in theirs[i + 1:]
                       if mine.index(a) > mine.index(b)]
            pairs = len(theirs) * (len(theirs) - 1) // 2
            every = [(a, b) for i, a in enumerate(theirs) for b in theirs[i + 1:]]
            # a claimed order is only as good as the tests behind it: which pairs they resolve,
            # each row by its own metric (e.g. the 2-Stage VAE's second-stage FID against a
            # one-stage row's prior FID), Holm over all of the claim's pairs at once
            def column(part: str, rows=theirs) -> pd.Series:
                return pd.Series({r: (display.seeds(table, of(r)) if part == "n" else table.get(
                    f"{of(r)} {part}", pd.Series(math.nan, index=table.index))).get(r)
                    for r in rows})
            tests = stats.resolve_claim(every, column("mean"), column("std"), column("n"))

            def resolved(pair_list) -> int:
                return sum(tests.get(pair, False) for pair in pair_list)
            notes.append(head + (f"the same order ({resolved(every)} of {pairs} pairs resolved "
                                 "by the seeds)." if not swapped else
                                 f"{' < '.join(map(short.get, mine))}, which differs from the "
                                 f"paper's ({len(swapped)} of {pairs} pairs swapped, "
                                 f"{resolved(swapped)} of them resolved by the seeds; "
                                 f"{resolved(every)} of {pairs} pairs resolved in all).")
                         + (f" Uninformative: {spec['caveat']}" if spec.get("caveat") else ""))
    return notes


def _convergence(lines: list[dict], search: dict) -> dict:
    """converged (True, False, or None where under 2 epochs report what is watched) and
    still_moving (JSON {name: relative change} of what had not flattened, else None), by the
    rule --epochs auto stops at (engine/convergence.py)."""
    by_epoch = {_epoch(line): line for line in lines}  # a restored epoch: its later line
    epochs = sorted(e for e in by_epoch if e > 0)
    metric = search.get("metric")
    history = {name: [by_epoch[e].get(name) for e in epochs]
               for name in dict.fromkeys((metric, *WATCHED))}
    moving = still_moving(history, metric, search.get("mode") or "min")
    if moving is None:
        return {"converged": None, "still_moving": None}
    moving = {name: round(change, 4) for name, change in moving.items()}
    return {"converged": not moving, "still_moving": json.dumps(moving) if moving else None}


STABILITY_AT = (0.5, 0.75)  # fractions of each trial's epochs the row order is compared at


def _stability_notes(curves: pd.DataFrame, trials: pd.DataFrame, search: dict) -> list[str]:
    """Whether the budget decided the ranking: for the search metric and every FID logged
    during training (val/fid*), Kendall's τ between the rows' order by their mean at 50% and
    75% of each completed trial's epochs and their order at its end (1: the same order)."""
    if curves.empty or not len(trials):
        return []
    done = trials[trials["status"] == "completed"]
    names = {t: g["name"] for g in _groups(trials, search) for t in trials.loc[g["index"], "trial"]}
    metric = search.get("metric")
    watched = [metric, *sorted(m for m in curves["metric"].unique()
                               if m.startswith("val/fid") and m != metric)]
    from scipy.stats import kendalltau
    parts = []
    for name in watched:
        data = curves[(curves["metric"] == name) & curves["trial"].isin(done["trial"])
                      & np.isfinite(curves["value"])]
        at: dict[float, dict[str, list[float]]] = {f: {} for f in (*STABILITY_AT, 1.0)}
        for trial, sub in data.groupby("trial"):
            sub = sub.sort_values("epoch")
            last = int(sub["epoch"].iloc[-1])
            for f in at:
                upto = sub[sub["epoch"] <= math.ceil(f * last)]
                if len(upto):
                    at[f].setdefault(names.get(trial), []).append(float(upto["value"].iloc[-1]))
        end = {row: np.mean(v) for row, v in at[1.0].items() if row is not None}
        taus = []
        for f in STABILITY_AT:
            rows = [r for r in end if r in at[f]]
            if len(rows) < 3:
                break
            tau = kendalltau([np.mean(at[f][r]) for r in rows], [end[r] for r in rows]).statistic
            taus.append(f"{tau:.2f} at {f:.0%}")
        if len(taus) == len(STABILITY_AT):
            parts.append(f"{name}: {', '.join(taus)}")
    if not parts:
        return []
    return ["row order during training against at the end (Kendall τ of the rows' mean over "
            "seeds, at a share of each trial's epochs; 1: the same order, lower: places changed "
            "after that point, by training or by the seeds' noise): " + "; ".join(parts) + "."]


PROJECT_TO = 4  # the projection: each row's curve extrapolated to this many times its epochs
PROJECT_MIN_POINTS = 6  # epochs in the second half of a curve, at least, to fit


def _power_law(t, a, b, c):
    return a + b * np.power(t, -c)


def project(epochs: np.ndarray, values: np.ndarray, factor: float = PROJECT_TO) -> float:
    """The value a falling curve is expected to reach at `factor` times its last epoch: a
    least-squares fit of a + b·t^(−c) (b ≥ 0, 0 < c ≤ 5) to its second half
    (scipy.optimize.curve_fit); NaN where the fit fails or there are under 6 points."""
    from scipy.optimize import curve_fit
    keep = epochs >= epochs.max() / 2
    t, y = epochs[keep].astype(float), values[keep].astype(float)
    if len(t) < PROJECT_MIN_POINTS or not np.all(np.isfinite(y)):
        return math.nan
    scale = max(float(np.ptp(y)), 1e-12 * max(1.0, abs(float(y[-1]))))
    try:
        (a, b, c), _ = curve_fit(_power_law, t, y, p0=(y[-1] - scale, scale * t[0] ** 0.5, 0.5),
                                 bounds=([-np.inf, 0, 1e-3], [np.inf, np.inf, 5]), maxfev=5000)
    except (RuntimeError, ValueError):
        return math.nan
    return float(_power_law(factor * t[-1], a, b, c))


def _projection_notes(curves: pd.DataFrame, trials: pd.DataFrame, search: dict) -> list[str]:
    """Whether more epochs could change a place: each row's mean curve of the search metric
    over its completed seeds (up to the last epoch all of them reached), extrapolated to
    PROJECT_TO times its epochs; the adjacent pairs (by the last value) whose projected order
    is the other way round."""
    metric, sign = search.get("metric"), (-1 if search.get("mode") == "max" else 1)
    if curves.empty or not len(trials) or metric is None:
        return []
    done = trials[trials["status"] == "completed"]
    names = {t: g["name"] for g in _groups(trials, search) for t in trials.loc[g["index"], "trial"]}
    data = curves[(curves["metric"] == metric) & curves["trial"].isin(done["trial"])]
    now, later = {}, {}
    for row, sub in data.assign(row=data["trial"].map(names)).groupby("row", sort=False):
        # the epochs every seed reached (an auto budget ends seeds at different epochs): past
        # them the mean would be fewer seeds' and jump
        common = sub.groupby("trial")["epoch"].max().min()
        mean = sub[sub["epoch"] <= common].groupby("epoch")["value"].mean()
        if len(mean) < 2 or not np.isfinite(mean.iloc[-1]):
            continue
        now[row] = sign * float(mean.iloc[-1])
        later[row] = sign * project(mean.index.to_numpy(), sign * mean.to_numpy())
    order = sorted(now, key=now.get)
    if data["epoch"].max() < 2 * PROJECT_MIN_POINTS:  # a smoke run: nothing to fit
        return []
    if len(order) < 2 or any(math.isnan(later[r]) for r in order):
        failed = [r for r in order if math.isnan(later.get(r, math.nan))]
        return [f"{metric}: no projection of {', '.join(failed)} (too few epochs or no fit), "
                "so whether more epochs change places is not known."] if failed else []
    flips = [(a, b) for a, b in zip(order, order[1:]) if sign * later[b] < sign * later[a]]
    head = (f"{metric} projected to {PROJECT_TO}× each row's epochs (a + b·t^−c fitted to the "
            "second half of the row's mean curve)")
    if not flips:
        return [f"{head}: the fitted curves predict no change of place between adjacent "
                "rows (one fit per row's mean curve; the seeds' noise aside)."]
    return [f"{head}: more epochs may change places, " + "; ".join(
        f"{b} would pass {a} ({_sig(later[b])} against {_sig(later[a])})"
        for a, b in flips) + "."]


def _sig(v: float) -> str:
    return display._sig(v)


def _convergence_notes(trials: pd.DataFrame, groups: list[dict]) -> list[str]:
    if "converged" not in trials or not (trials["converged"] == False).any():  # noqa: E712
        return []
    parts = []
    for g in groups:
        sub = trials.loc[g["index"]]
        done = sub[sub["status"] == "completed"]
        late = done[done["converged"] == False]  # noqa: E712
        if late.empty:
            continue
        changes: dict[str, list[float]] = {}
        for text in late["still_moving"]:
            for name, change in json.loads(text).items():
                changes.setdefault(name, []).append(change)
        what = ", ".join(f"{name} by {_percent_range(c)}" for name, c in changes.items())
        seeds = "seed" if len(done) == 1 else "seeds"
        parts.append(f"{g['name']}, {len(late)} of {len(done)} {seeds}, {what}")
    return [f"not converged (the mean over the last {CONVERGENCE_WINDOW:.0%} of the epochs, at "
            "least one, against as many before them still improved the search metric, or moved "
            f"the decoder variance train/sigma_x2, by more than {CONVERGENCE_TOL:.0%}; more "
            f"epochs may change these rows' places): {'; '.join(parts)}."]


def _percent_range(changes: list[float]) -> str:
    """"8%" or "4.8–11%" (two significant digits)."""
    low, high = (f"{100 * v:.2g}" for v in (min(changes), max(changes)))
    return f"{low}%" if low == high else f"{low}–{high}%"


def _status_notes(trials: pd.DataFrame, groups: list[dict], table: pd.DataFrame,
                  search_rows: list) -> list[str]:
    notes = ["mean ± the half-width of its 95% confidence interval (Student's t, n - 1 degrees "
             "of freedom) over the completed seeds of each row, n of them (each seed's value in "
             "trials.csv, the std in table.csv); diverged, stopped-early, errored and "
             "unfinished trials are counted, not averaged."]
    if table.empty or not table["n"].any():
        notes.append(f"no trial has completed yet ({_status_counts(trials)}), so the table has "
                     "no numbers.")
    strays = [g["name"] for g in groups if g["row"] == len(search_rows)]
    if strays:
        notes.append(f"{', '.join(strays)}: no row of search.json has this label; listed last.")
    varied = pd.Series([g["label"] for g in groups
                        if not g["exact"] and g["row"] < len(search_rows)], dtype=object)
    for label, k in varied.value_counts(sort=False).items():
        many = (f"{k} configurations of {label} differ" if k > 1
                else f"1 configuration of {label} differs")
        notes.append(f"{many} from its row in search.json (sampled by the search, or the row "
                     "was edited).")
    waiting = [g["name"] for g in groups if not g["index"]]
    if waiting:
        notes.append(f"no trial of {', '.join(waiting)} has started (no trial folder yet).")
    return notes


def _status_counts(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts() if len(trials) else pd.Series(dtype=int)
    order = ["completed", *COUNTS]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts) or "no trials"


# --- writing ------------------------------------------------------------------------------

def _title(search: dict, finished: bool) -> str:
    state = "search finished" if finished else "partial: search running or interrupted"
    seeds = ", ".join(str(s) for s in search.get("seeds") or [])
    budget = (f"each trial to its plateau, {search.get('min_epochs')} to {search.get('epochs')} "
              "epochs" if search.get("budget") == "auto" else f"{search.get('epochs')} epochs")
    # a study's title is its docstring's first sentence: its full stop not doubled by ours
    title = (search.get("title") or search.get("name", "search")).rstrip().removesuffix(".")
    return (f"{title} ({search.get('name', '')}): "
            f"{search.get('dataset')}, {budget}, seeds {seeds}, "
            f"{search.get('metric')} ({search.get('mode')}); {state}")


def _status_text(trials: pd.DataFrame) -> str:
    lines = [f"trials: {len(trials)} ({_status_counts(trials)})"]
    errored = trials[trials["status"] == "error"] if len(trials) else trials
    for message, sub in errored.groupby("error", sort=False):
        who = ", ".join(f"{r.label} seed {_short(r.seed)}" for r in sub.itertuples())
        lines.append(f"  error in {who}: {message}")
    return "\n".join(lines)
