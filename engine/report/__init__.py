"""Reports of a run folder, finished or partial: one tidy row per trial, the per-epoch curves,
the ablation table (mean ± std over seeds, the paper's numbers beside ours when they compare),
as CSV / Parquet / Markdown / LaTeX, and two plots.

    python -m engine report runs/ablation_uae

It reads only what the engine writes (search.json, each trial's params.json, result.json,
evaluation.json and error.txt, finished.json), imports neither Ray nor torch, so it runs
wherever a run folder was copied to, and never branches on a model's name: a table row is a
label plus a config. write_report, here, puts the parts together; each module does one job:

    read.py         a run folder into DataFrames: search.json, one row per trial, the curves
    rows.py         which trials make each table row, the row's name, the count columns
    table.py        the ablation table (means, spreads, the paper's numbers, the floor row)
                    and its display cells
    notes.py        the notes under the table: paper orderings, the floor row, the evaluation's
                    gaps, the rows' statuses, the pairs the seeds resolve
    convergence.py  the notes on the budget: unconverged trials, the order's stability during
                    training, the projection to more epochs
    stats.py, display.py   the tests behind a column; how a number is rounded and marked
    formats.py      the Markdown and LaTeX tables
    figures.py, qualitative.py   the plots; the trials' own pictures, a band per row
    evaluations.py  a later evaluation merged into a trial's row
    tuning.py       a sampled search's best configurations and parameter importances
    status.py       `status`: a running search's trials, one line each
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from engine.files import link_problem, write_atomic
from engine.report import figures, formats, qualitative, tuning
from engine.report.convergence import project, projection_notes, stability_notes
from engine.report.figures import save_figure
from engine.report.notes import status_counts
from engine.report.read import (CURVE_COLUMNS, NotARunFolder, damaged_trials, load_curves,
                                load_search, load_trials, row_seeds)
from engine.report.rows import COUNTS, FLOOR_ROW, NOT_CONVERGED, row_groups, short
from engine.report.table import ablation_table, format_table

# what other code imports from engine.report (the studies, the search, `evaluate`, the tests)
__all__ = ["COUNTS", "CURVE_COLUMNS", "FLOOR_ROW", "NOT_CONVERGED", "REPORT_FILES",
           "NotARunFolder", "ablation_table", "damaged_trials", "format_table", "load_curves",
           "load_search", "load_trials", "project", "save_figure", "write_report"]

REPORT_FILES = ("table.md", "table.tex", "table.csv", "trials.csv", "trials.parquet",
                "curves.csv", "val_curves.png", "val_curves.pdf", "final_bar.png", "final_bar.pdf")


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
    more = _more_seeds_text(search)
    notes = (left_out + ([more] if more else []) + table.attrs["notes"]
             + stability_notes(curves, trials, search)
             + projection_notes(curves, trials, search))
    title = _title(search, (run / "finished.json").is_file())
    markdown = formats.markdown(shown)
    note_lines = "".join(f"- {n}\n" for n in notes)
    names = {trial: g["name"] for g in row_groups(trials, search)
             for trial in trials.loc[g["index"], "trial"]}
    sections, texts = (tuning.report_sections(trials, search) if tuning.is_sampled(search)
                       else ("", {}))  # a sampled search: its best configurations, importances
    files = [*REPORT_FILES, *texts]
    out = run / "report"
    out.mkdir(exist_ok=True)
    writers: dict[str, Callable[[Path], object]] = {
        "table.md": lambda p: p.write_text(f"# {title}\n\n{markdown}\n\n{note_lines}"
                                           + (f"\n{sections}" if sections else "")),
        "table.tex": lambda p: p.write_text(formats.latex_table(
            shown, notes, title, f"tab:{search.get('name', 'search')}")),
        "table.csv": lambda p: table.to_csv(p),
        "trials.csv": lambda p: trials.to_csv(p, index=False),
        "trials.parquet": lambda p: trials.to_parquet(p, index=False),
        "curves.csv": lambda p: curves.to_csv(p, index=False),
        **figures.writers("val_curves", lambda: figures.curves_figure(
            curves, names, table.index, search), dpi=120),
        **figures.writers("final_bar", lambda: figures.bar_figure(table, search, trials, names),
                          dpi=120),
    }
    writers.update({name: (lambda p, t=text: p.write_text(t)) for name, text in texts.items()})
    for name, write in writers.items():
        write_atomic(out / name, write)
    # what must not cost the report its tables where it cannot be drawn (e.g. fANOVA on
    # trials that all scored the same): said in a line instead
    extra: dict[str, Callable[[Path], object]] = {}
    pictures = qualitative.pictures(run, trials, search)
    if pictures:  # the trials' own pictures, a band per row (engine/report/qualitative.py)
        extra.update({f"report/{name}": write for name, write in figures.writers(
            "qualitative", lambda: qualitative.figure(pictures, qualitative.title(
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


def _title(search: dict, finished: bool) -> str:
    """The report's first line: the study, its data set, budget, seeds and search metric, and
    whether the search finished."""
    state = "search finished" if finished else "partial: search running or interrupted"
    seeds = ", ".join(str(s) for s in search.get("seeds") or [])
    budget = (f"each trial to its plateau"
              + (" or past its best" if search.get("early_stopping") else "")
              + f", {search.get('min_epochs')} to {search.get('epochs')} epochs"
              if search.get("budget") == "auto" else f"{search.get('epochs')} epochs")
    # a study's title is its docstring's first sentence: its full stop not doubled by ours
    title = (search.get("title") or search.get("name", "search")).rstrip().removesuffix(".")
    whom = _more_seeds_whom(search)
    return (f"{title} ({search.get('name', '')}): "
            f"{search.get('dataset')}, {budget}, seeds {seeds}"
            + (f" (more for {whom}: see the notes)" if whom else "")
            + f", {search.get('metric')} ({search.get('mode')}); {state}")


def _more_seeds_whom(search: dict) -> str:
    """"every row" or "some rows" that --more-seeds gave more seeds; "" where none."""
    more = row_seeds(search)
    if not more:
        return ""
    return ("every row" if {r.get("label") for r in search.get("rows") or []} <= set(more)
            else "some rows")


def _more_seeds_text(search: dict) -> str:
    """The rows that --resume --more-seeds gave more seeds than the run's, and what that
    means for their tests; "" where none."""
    more = row_seeds(search)
    if not more:
        return ""
    by_seeds: dict[tuple, list[str]] = {}
    for label, seeds in more.items():
        by_seeds.setdefault(tuple(seeds), []).append(label)
    rows = "; ".join(f"{', '.join(labels)}: seeds {_span(seeds)}"
                     for seeds, labels in by_seeds.items())
    first = search.get("git")
    commits = {r.get("git") for r in (search.get("environment") or {}).get("resumes", [])}
    other = sorted(c for c in commits - {first, None})
    return (f"more seeds (--resume --more-seeds): {rows}. A pair chosen for more seeds because "
            "its first seeds left it unresolved is tested again on all of them: a second look, "
            "which the tests' 5% does not account for; a confirmatory claim wants a fresh run "
            "at the larger count."
            + (f" The run was resumed at another commit than its start ({first}; then "
               f"{', '.join(other)}): a row's seeds may come from different code "
               "(search.json's \"environment\" has each start's)." if other else ""))


def _span(seeds) -> str:
    """"0-5" for consecutive seeds, else "0, 1, 4"."""
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _status_text(trials: pd.DataFrame) -> str:
    """The trials by status, then each error message with the trials that ended with it."""
    lines = [f"trials: {len(trials)} ({status_counts(trials)})"]
    errored = trials[trials["status"] == "error"] if len(trials) else trials
    for message, sub in errored.groupby("error", sort=False):
        who = ", ".join(f"{r.label} seed {short(r.seed)}" for r in sub.itertuples())
        lines.append(f"  error in {who}: {message}")
    return "\n".join(lines)
