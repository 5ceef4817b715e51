"""The notes under the ablation table, each a sentence a reader needs to read the table right:
rows that run a preset of another name, the paper's orderings of rows beside ours and how many
of their pairs the seeds resolve, what the "real data" floor row is, what the evaluation could
not compute, what the cells are over and which rows are missing or differ from search.json,
and, per column, how many adjacent pairs the seeds resolve and how many seeds would resolve
the rest. The notes on convergence and the budget are engine/report/convergence.py's.
"""
from __future__ import annotations

import json
import math
import os

import pandas as pd

from engine.eval.groups import GROUPS  # the group names only: it imports nothing
from engine.report import display, stats
from engine.report.read import number
from engine.report.rows import COUNTS, FLOOR_ROW

SEEDS_SHOWN = (5, 10, 20)  # seed counts the resolution note says how many pairs each resolves


def preset_notes(groups: list[dict], rows: list[dict]) -> list[str]:
    """One note naming the rows that run a preset of another name than their label (search.json
    rows' "preset"), e.g. the paper's row "UAE" as the authors' code computes it ("UAE-code"):
    a reader must know which reading a row with the paper's name is."""
    other = [(g["name"], rows[g["row"]]["preset"]) for g in groups
             if g["row"] < len(rows) and rows[g["row"]].get("preset") not in (None, g["label"])]
    if not other:
        return []
    return ["rows that run a preset of another name (models/presets.py says what each "
            "follows): " + ", ".join(f"{row} runs {preset}" for row, preset in other) + "."]


def order_notes(table: pd.DataFrame, search: dict) -> list[str]:
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
                values = {label: number(numbers[ds].get(label, {}).get(of(label)))
                          for label in spec.get("rows") or numbers[ds]}
                claims.append((f"{source} on {ds}", sorted(
                    (k for k, v in values.items() if not math.isnan(v)), key=values.get)))
        for claim, theirs in claims:
            theirs = [label for label in theirs if label in table.index]
            if len(theirs) < 2:
                continue
            ours = {label: number(table[f"{of(label)} mean"].get(label)) if f"{of(label)} mean"
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


def order_legend(notes: list[str]) -> list[str]:
    """The order sentences, with one line saying what "resolved" means in them."""
    if not any("resolved by the seeds" in note for note in notes):
        return notes
    return notes + ["a paper's order: a pair is resolved by the seeds where Welch's t-test, "
                    "Holm-corrected over that order's own pairs (a family the paper fixed, "
                    f"not the table), rejects equal means at {stats.LEVEL:g}; the table's "
                    "letters correct over every pair of their column, so an order may resolve "
                    "a pair whose rows share a letter."]


def floor_notes(trials: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """What the floor row measures, where the table has one."""
    if not table.attrs.get("floor"):
        return []
    return [f"{FLOOR_ROW}: what real images score on each FID and KID column, measured like "
            "the rows (real images disjoint from the reference, as many as each column's "
            "generated or reconstructed set, against the same reference): the value real "
            "images reach at these sizes, which the rows are read against. Samples and "
            "interpolations cannot be expected below it; reconstructions can, being the "
            "reference images' own."]


def evaluation_notes(trials: pd.DataFrame, metrics: list[str]) -> list[str]:
    """What the evaluation said about the table's metrics: the feature space FID was computed
    in, and why a metric (or a group) could not be computed, with how many trials said so."""
    said: dict[tuple[str, str], int] = {}
    for text in trials.get("eval_notes", pd.Series(dtype=object)).dropna():
        for key, reason in json.loads(text).items():
            said[(key, reason)] = said.get((key, reason), 0) + 1
    notes = []
    for (key, reason), n in said.items():
        wanted = (key in ("features", "floor") and any("fid" in m or "precision" in m
                                                        or "recall" in m for m in metrics)) \
            or key in metrics or key in GROUPS or (key.endswith("*") and any(
                m.startswith(key[:-1]) for m in metrics))
        if not wanted:
            continue
        who = f" ({n} trial{'s' if n > 1 else ''})"
        notes.append(f"FID, precision and recall in {reason}{who}." if key == "features"
                     else f"{FLOOR_ROW} row: {reason}{who}." if key == "floor"
                     else f"{key} not computed{who}: {reason}")
    return notes


def status_notes(trials: pd.DataFrame, groups: list[dict], table: pd.DataFrame,
                 search_rows: list) -> list[str]:
    """What the cells are over, and the rows a reader must know about: no trial completed yet,
    rows no search.json row has, configurations that differ from their row, rows not started."""
    notes = ["mean ± the half-width of its 95% confidence interval (Student's t, n - 1 degrees "
             "of freedom) over the completed seeds of each row, n of them (each seed's value in "
             "trials.csv, the std in table.csv); diverged, stopped-early, errored and "
             "unfinished trials are counted, not averaged."]
    if table.empty or not table["n"].any():
        notes.append(f"no trial has completed yet ({status_counts(trials)}), so the table has "
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


def status_counts(trials: pd.DataFrame) -> str:
    """"5 completed, 1 diverged, 1 error, 2 unfinished": the trials by status, none left out."""
    counts = trials["status"].value_counts() if len(trials) else pd.Series(dtype=int)
    order = ["completed", *COUNTS]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts) or "no trials"


def resolution_notes(table: pd.DataFrame) -> list[str]:
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
