"""The statistics behind the table (engine/report/stats.py): intervals, Holm-corrected pairwise
tests, compact letters, the monotone bold rule, seeds needed, and their place in the report
(the "real data" floor row, the order-stability and resolution notes). Checked against
scipy's own intervals and tests on the seeds, Holm computed by hand, and the power of the
t-test computed from the noncentral t distribution."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from engine import report
from engine.report import stats
from test_report import UT, _search, make_run


def _summary(seeds: dict) -> tuple[pd.Series, pd.Series, pd.Series]:
    mean = pd.Series({k: np.mean(v) for k, v in seeds.items()})
    std = pd.Series({k: np.std(v, ddof=1) if len(v) > 1 else np.nan for k, v in seeds.items()})
    return mean, std, pd.Series({k: len(v) for k, v in seeds.items()})


def test_the_interval_is_scipys_t_interval_of_the_seeds():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 10):
        x = rng.normal(3.0, 0.5, n)
        low, high = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
        assert stats.ci_halfwidth(np.std(x, ddof=1), n) == pytest.approx((high - low) / 2)
    assert stats.ci_halfwidth(0.1, 3) == pytest.approx(4.302653 * 0.1 / math.sqrt(3))
    assert math.isnan(stats.ci_halfwidth(0.1, 1)) and math.isnan(stats.ci_halfwidth(math.nan, 3))


def _holm_by_hand(p: dict, alpha=0.05) -> set:
    """Holm's step-down procedure written out: the pairs it rejects."""
    rejected, m = set(), len(p)
    for k, pair in enumerate(sorted(p, key=p.get)):
        if p[pair] >= alpha / (m - k):
            break
        rejected.add(pair)
    return rejected


def test_pairwise_tests_are_welchs_on_the_seeds_with_holms_correction():
    rng = np.random.default_rng(7)
    seeds = {"A": rng.normal(1.0, 0.05, 4), "B": rng.normal(1.05, 0.05, 4),
             "C": rng.normal(1.3, 0.05, 4), "D": rng.normal(1.32, 0.3, 3),
             "E": rng.normal(2.0, 0.05, 5)}
    column = stats.compare(*_summary(seeds), "↓")
    p = {(a, b): sps.ttest_ind(seeds[a], seeds[b], equal_var=False).pvalue
         for a, b in itertools.combinations(column.tested, 2)}
    for a, b, got in zip(column.pairs.a, column.pairs.b, column.pairs.p):
        assert got == pytest.approx(p[(a, b)])
    rejected = _holm_by_hand(p)
    for a, b in p:
        assert column.differ(a, b) == ((a, b) in rejected) == column.differ(b, a)
    assert 0 < len(rejected) < len(p)  # the example resolves some pairs and not others


@pytest.mark.parametrize("seed", range(20))
def test_two_rows_share_a_letter_exactly_where_the_test_does_not_tell_them_apart(seed):
    rng = np.random.default_rng(seed)
    rows = list("ABCDEFG")[:rng.integers(2, 8)]
    pairs = list(itertools.combinations(rows, 2))
    different = [pq for pq in pairs if rng.random() < 0.5]
    got = stats.letters(rows, different)
    for a, b in pairs:
        assert bool(set(got[a]) & set(got[b])) == ((a, b) not in different)
    assert all(got[r] for r in rows) and "a" in got[rows[0]]  # the best row's letter is "a"


def test_letters_of_an_ordered_chain():
    # A < B < C by mean; only A and C differ: A "a", B "ab", C "b"
    assert stats.letters(["A", "B", "C"], [("A", "C")]) == {"A": "a", "B": "ab", "C": "b"}
    assert stats.letters(["A", "B"], []) == {"A": "a", "B": "a"}


def test_bold_is_monotone_in_the_mean():
    """The issue's case: the worst mean, with a wide spread, cannot be told from the best,
    while a better mean with a tight spread can. Bold must not skip the better one for it,
    nor mark the one shown worse than the best."""
    seeds = {"RAE": [190, 198, 206], "UAE": [890, 893, 896], "VAE": [700, 998, 1296]}
    mean, std, n = _summary(seeds)
    column = stats.compare(mean, std, n, "↓")
    assert column.differ("RAE", "UAE") and not column.differ("RAE", "VAE")
    assert column.bold == {"RAE"}
    # and where the unresolved row comes first in the means, both are bold
    seeds = {"RAE": [190, 198, 206], "UAE": [150, 400, 650], "VAE": [890, 893, 896]}
    column = stats.compare(*_summary(seeds), "↓")
    assert not column.differ("RAE", "UAE") and column.differ("RAE", "VAE")
    assert column.bold == {"RAE", "UAE"}
    # every marked row's mean is better than every unmarked row's, over random columns
    rng = np.random.default_rng(3)
    for _ in range(50):
        seeds = {k: rng.normal(rng.uniform(0, 3), rng.uniform(0.01, 1.5), rng.integers(2, 6))
                 for k in "ABCDEF"}
        mean, std, n = _summary(seeds)
        for better in ("↓", "↑"):
            column = stats.compare(mean, std, n, better)
            sign = 1 if better == "↓" else -1
            rest = [sign * mean[k] for k in seeds if k not in column.bold]
            assert not rest or max(sign * mean[k] for k in column.bold) <= min(rest)
            best = column.order[0]
            assert not any(column.differ(best, k) for k in column.bold)


def test_one_seed_rows_are_untested_and_bold_only_as_the_best():
    seeds = {"A": [1.0], "B": [1.1, 1.2, 1.15], "C": [1.12, 1.18, 1.2]}
    column = stats.compare(*_summary(seeds), "↓")
    assert column.bold == {"A"} and "A" not in column.letters
    column = stats.compare(*_summary({**seeds, "A": [2.0]}), "↓")
    assert "A" not in column.bold and column.bold >= {"B"}


def _power(n: int, effect: float, alpha: float) -> float:
    """Two-sided two-sample t-test power with n per group, from the noncentral t."""
    df, nc = 2 * n - 2, effect * math.sqrt(n / 2)
    crit = sps.t.ppf(1 - alpha / 2, df)
    return sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)


def test_seeds_needed_is_the_smallest_n_with_80_percent_power():
    for (m1, s1, m2, s2, pairs) in [(198, 20, 212, 25, 28), (1.0, 0.1, 1.2, 0.1, 1),
                                    (0.05, 0.004, 0.052, 0.003, 6)]:
        need = stats.seeds_needed(m1, s1, m2, s2, pairs)
        effect = abs(m1 - m2) / math.sqrt((s1 ** 2 + s2 ** 2) / 2)
        alpha = 0.05 / pairs
        assert _power(int(need), effect, alpha) >= 0.8 > _power(int(need) - 1, effect, alpha)
    # rows far apart: statsmodels' solver failed here (scipy's nct.cdf is NaN for the far
    # tail), warned on stderr and made it "more than 1,000 seeds"; the upper tail alone,
    # whose complement bounds the far one, gives 4 (0.9988 at 4, 0.725 at 3)
    need = stats.seeds_needed(1.0, 0.1, 1.97177, 0.1, 105)
    assert need == 4
    for n, above in ((4, True), (3, False)):
        crit = sps.t.isf(0.05 / 105 / 2, 2 * n - 2)
        assert bool(sps.nct.sf(crit, 2 * n - 2, 9.7177 * math.sqrt(n / 2)) >= 0.8) == above
    assert math.isinf(stats.seeds_needed(1.0, 0.1, 1.0, 0.1, 3))  # equal means: never
    assert math.isinf(stats.seeds_needed(1.0, 1.0, 1.0001, 1.0, 3))  # beyond 1,000
    assert math.isnan(stats.seeds_needed(1.0, 0.0, 2.0, 0.0, 3))  # no spread: no estimate


def _add_to_completed(run, add) -> None:
    """Every completed trial's last line updated with add(that line) (a dict)."""
    for folder in run.iterdir():
        path = folder / "result.json"
        if not path.is_file():
            continue
        lines = [json.loads(t) for t in path.read_text().splitlines() if t.endswith("}")]
        if lines and lines[-1].get("status") == "completed":
            lines[-1].update(add(lines[-1]))
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _fid_run(tmp_path, floor=True):
    """make_run with FIDs and KIDs on every completed trial, and their floors."""
    run = make_run(tmp_path, fid=True)
    search = _search(run)
    search["table_metrics"] = ["test/mse", "eval/fid_rec"]
    (run / "search.json").write_text(json.dumps(search))
    _add_to_completed(run, lambda last: {
        "eval/kid_rec": last["eval/fid_rec"] / 1000,
        **({"eval/floor_fid_rec": 12.5, "eval/floor_kid_rec": 0.004} if floor else {})})
    return run


def test_the_real_data_row_shows_the_floor_and_takes_no_part_in_the_comparison(tmp_path):
    run = _fid_run(tmp_path)
    table = report.ablation_table(report.load_trials(run), _search(run))
    assert list(table.index)[-1] == report.FLOOR_ROW
    assert table.loc[report.FLOOR_ROW, "eval/fid_rec mean"] == 12.5
    assert table.loc[report.FLOOR_ROW, "eval/kid_rec mean"] == 0.004
    assert np.isnan(table.loc[report.FLOOR_ROW, "test/mse mean"])  # no floor for the MSE
    shown = report.format_table(table)
    assert shown.loc[report.FLOOR_ROW, ("digits", "FID (rec.) ↓")] == "12.50"
    assert shown.loc[report.FLOOR_ROW, ("trials", "n")] == ""
    floor = list(table.index).index(report.FLOOR_ROW)
    assert not any(row == floor for row, _ in shown.attrs["bold"])  # lower, yet never bold
    assert any("real data: what real images score" in n for n in table.attrs["notes"])
    md = report.write_report(run)
    assert "| real data" in md
    (tmp_path / "b").mkdir()
    without = report.ablation_table(report.load_trials(_fid_run(tmp_path / "b", floor=False)),
                                    _search(run))
    assert report.FLOOR_ROW not in without.index and without.attrs["floor"] is None


def test_letters_and_seeds_needed_in_the_table_and_its_notes(tmp_path):
    # five seeds in each of three rows: A and B close, C far off
    rng = np.random.default_rng(0)
    values = {"A": rng.normal(0.010, 0.001, 5), "B": rng.normal(0.0105, 0.001, 5),
              "C": rng.normal(0.020, 0.001, 5)}
    rows = [(k, {"beta": b}) for k, b in zip(values, (1.0, 2.0, 3.0))]
    trials = [(r, s, "completed", float(values[k][s])) for r, k in enumerate(values)
              for s in range(5)]
    run = make_run(tmp_path, trials=trials, rows=rows)
    table = report.ablation_table(report.load_trials(run), _search(run))
    shown = report.format_table(table)
    cells = shown[("digits", "MSE ↓")]
    assert cells["A"].endswith(" a") and cells["B"].endswith(" a") and cells["C"].endswith(" b")
    notes = " ".join(table.attrs["notes"])
    need = stats.seeds_needed(values["A"].mean(), values["A"].std(ddof=1),
                              values["B"].mean(), values["B"].std(ddof=1), 3)
    within = [int(need <= cap) for cap in (5, 10, 20)]
    assert (f"MSE ↓: 1 of 2 adjacent pairs resolved (2 of 3 in all); 5/10/20 seeds per row "
            f"would resolve {'/'.join(map(str, within))} of the 1 unresolved; the hardest, A against "
            f"B: ≈ {int(need)} seeds per row.") in notes
    tex = report.formats.latex_table(shown, [])
    assert r"\textsuperscript{" in tex  # the letters, set small after the interval


def test_order_stability_is_kendalls_tau_of_the_rows_during_training_against_the_end(tmp_path):
    run = make_run(tmp_path)
    trials, curves = report.load_trials(run), report.load_curves(run)
    # rewrite val/mse so that the order of the three rows at epoch 2 (of 3) is reversed at 3
    at = {("VAE (beta=1)", 2): 1.0, (UT, 2): 2.0, ("VAE (beta=0.5)", 2): 3.0,
          ("VAE (beta=1)", 3): 3.0, (UT, 3): 2.0, ("VAE (beta=0.5)", 3): 1.0}
    names = {t: g["name"] for g in report.rows.row_groups(trials, _search(run))
             for t in trials.loc[g["index"], "trial"]}
    val = curves["metric"] == "val/mse"
    curves.loc[val, "value"] = [at.get((names[t], e), 9.0) for t, e in
                                zip(curves.loc[val, "trial"], curves.loc[val, "epoch"])]
    [note] = report.convergence.stability_notes(curves, trials, _search(run))
    # at 50% of 3 epochs: epoch 2 (ceil 1.5), reversed: τ = -1; at 75%: epoch 3, the same: 1
    want = sps.kendalltau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]).statistic
    assert want == -1 and "val/mse: -1.00 at 50%, 1.00 at 75%" in note


def test_the_order_sentence_counts_the_pairs_the_seeds_resolve():
    paper = {"source": "P", "numbers": {"mnist": {"A": {"m": 1.0}, "B": {"m": 2.0},
                                                  "C": {"m": 3.0}}},
             "orders": [{"metric": "m"}]}
    # A and B three seeds each, far apart; C as close to B as the spread: unresolved
    seeds = {"A": [0.10, 0.11, 0.12], "B": [0.50, 0.52, 0.54], "C": [0.40, 0.60, 0.56]}
    mean, std, n = _summary(seeds)
    table = pd.DataFrame({"m mean": mean, "m std": std, "n": n})
    column = stats.compare(mean, std, n, None)
    assert column.differ("A", "B") and column.differ("A", "C") and not column.differ("B", "C")
    note, = report.notes.order_notes(table, {"paper": paper, "dataset": "digits"})
    assert note.endswith("ours on digits: the same order (2 of 3 pairs resolved by the seeds).")
    # C's mean now below B's: the one swapped pair is the unresolved one; A against C, now
    # 0.34 apart at C's wide spread (Welch p ≈ 0.03), no longer passes Holm's 0.05/2
    table.loc["C", "m mean"] = 0.45
    note, = report.notes.order_notes(table, {"paper": paper, "dataset": "digits"})
    assert note.endswith("A < C < B, which differs from the paper's (1 of 3 pairs swapped, 0 of "
                         "them resolved by the seeds; 1 of 3 pairs resolved in all).")


def test_an_order_of_rows_each_by_its_own_metric_tests_every_pair_of_the_claim():
    """two_stage's case: Dai & Wipf order the 2-Stage VAE by its second-stage FID and the
    one-stage VAEs by their prior FID. Each pair is tested on the two rows' own metrics, Holm
    over the claim's 3 pairs (checked against scipy's Welch p-values); before, only pairs
    sharing a metric were tested, so the converged run's "0 of 3 pairs resolved" hid two."""
    seeds = {"fixed": [17.0, 20.5, 21.8], "learned": [22.3, 24.4, 25.8],
             "2-stage": [4.30, 4.42, 4.55]}
    prior = {k: v for k, v in seeds.items() if k != "2-stage"}
    mean, std, n = _summary(prior)
    m2, s2, n2 = _summary({"2-stage": seeds["2-stage"], "learned": [4.3, 4.42, 4.55]})
    table = pd.DataFrame({"prior mean": mean, "prior std": std, "prior n": n,
                          "second mean": m2, "second std": s2, "second n": n2})
    claim = ["2-stage", "fixed", "learned"]
    pairs = list(itertools.combinations(claim, 2))
    p = sorted((sps.ttest_ind(seeds[a], seeds[b], equal_var=False).pvalue, (a, b))
               for a, b in pairs)
    by_hand, rejecting = {}, True
    for i, (pv, pair) in enumerate(p):
        rejecting = rejecting and pv <= 0.05 / (len(p) - i)
        by_hand[pair] = rejecting
    assert sum(by_hand.values()) == 2  # 2-stage against each; fixed against learned not
    paper = {"source": "P", "orders": [{"metric": {"2-stage": "second", "fixed": "prior",
                                                   "learned": "prior"},
                                        "what": "FID of samples", "ascending": claim}]}
    note, = report.notes.order_notes(table, {"paper": paper, "dataset": "mnist5k"})
    assert note.endswith("the same order (2 of 3 pairs resolved by the seeds).")


def test_a_claimed_order_is_tested_with_holm_over_its_own_pairs_not_the_columns():
    """noise_variance's case: a paper's order over 3 of a column's 33 rows, 2 seeds each. Holm
    over the claim's 3 pairs (checked against scipy's Welch p-values and Holm written out)
    resolves what Holm over the column's 528 pairs cannot; the sentence counts the former, and
    a legend line says so."""
    rng = np.random.default_rng(0)
    seeds = {"clean": [0.0060, 0.0064], "s=0.01": [0.0158, 0.0161], "s=0.1": [0.113, 0.117],
             **{f"filler {i}": list(rng.normal(0.5, 0.1, 2)) for i in range(30)}}
    mean, std, n = _summary(seeds)
    table = pd.DataFrame({"m mean": mean, "m std": std, "n": n})
    claim = ["clean", "s=0.01", "s=0.1"]
    pairs = list(itertools.combinations(claim, 2))
    p = sorted((sps.ttest_ind(seeds[a], seeds[b], equal_var=False).pvalue, (a, b))
               for a, b in pairs)
    by_hand, rejecting = {}, True
    for i, (pv, pair) in enumerate(p):  # Holm: step down while p_(i) <= alpha / (m - i)
        rejecting = rejecting and pv <= 0.05 / (len(p) - i)
        by_hand[pair] = rejecting
    assert stats.resolve_claim(pairs, mean, std, n) == by_hand and sum(by_hand.values()) == 3
    column = stats.compare(mean, std, n, None)
    assert not any(column.differ(a, b) for a, b in pairs)  # over 528 pairs: none resolved
    paper = {"source": "P", "orders": [{"metric": "m", "ascending": claim, "claim": "Sec. 5"}]}
    notes = report.notes.order_legend(report.notes.order_notes(table, {"paper": paper,
                                                                       "dataset": "digits"}))
    assert notes[0].endswith("the same order (3 of 3 pairs resolved by the seeds).")
    assert notes[1].startswith("a paper's order: a pair is resolved by the seeds where "
                               "Welch's t-test, Holm-corrected over that order's own pairs")
    # a row of one seed cannot be tested: its pairs are not resolved, nor in the family
    one = {**seeds, "clean": [0.0060]}
    mean, std, n = _summary(one)
    assert stats.resolve_claim(pairs, mean, std, n) == {("s=0.01", "s=0.1"): True}


def test_inceptions_standardized_fid_and_kid_follow_its_raw_fid_with_their_floors(tmp_path):
    run = _fid_run(tmp_path)
    _add_to_completed(run, lambda last: {"eval/fidz_rec": last["eval/fid_rec"] / 100,
                                         "eval/kidz_rec": 0.01, "eval/floor_fidz_rec": 0.125})
    table = report.ablation_table(report.load_trials(run), _search(run))
    means = [c for c in table.columns if c.endswith(" mean")]
    assert means == ["test/mse mean", "eval/fid_rec mean", "eval/kid_rec mean",
                     "eval/fidz_rec mean", "eval/kidz_rec mean"]
    assert table.loc[report.FLOOR_ROW, "eval/fidz_rec mean"] == 0.125
    assert np.isnan(table.loc[report.FLOOR_ROW, "eval/kidz_rec mean"])  # no floor reported
    assert ("digits", "std. FID (rec.) ↓") in report.format_table(table).columns


def test_the_projection_recovers_a_power_law_and_names_the_places_it_would_change(tmp_path):
    t = np.arange(1, 41, dtype=float)
    curve = 0.01 + 0.2 * t ** -0.7
    assert report.project(t, curve) == pytest.approx(0.01 + 0.2 * 160 ** -0.7, rel=1e-6)
    assert math.isnan(report.project(t[:5], curve[:5]))  # too few points in the second half
    run = make_run(tmp_path)
    trials, curves = report.load_trials(run), report.load_curves(run)
    names = {tr: g["name"] for g in report.rows.row_groups(trials, _search(run))
             for tr in trials.loc[g["index"], "trial"]}
    done = trials[trials["status"] == "completed"]["trial"]
    # 20 epochs each: VAE (beta=1) ends best but flat; UT ends worse and still falling fast
    law = {"VAE (beta=1)": (0.020, 0.01, 2.0), UT: (0.0, 1.0, 1.2),
           "VAE (beta=0.5)": (0.05, 0.1, 1.0)}
    rows = [(tr, names[tr], e, "val/mse", law[names[tr]][0] + law[names[tr]][1] * e
             ** -law[names[tr]][2]) for tr in done for e in range(1, 21)]
    curves = pd.DataFrame(rows, columns=["trial", "label", "epoch", "metric", "value"])
    end = {row: a + b * 20 ** -c for row, (a, b, c) in law.items()}
    assert end["VAE (beta=1)"] < end[UT] < end["VAE (beta=0.5)"]
    [note] = report.convergence.projection_notes(curves, trials, _search(run))
    want = {row: a + b * 80 ** -c for row, (a, b, c) in law.items()}
    assert want[UT] < want["VAE (beta=1)"]
    assert f"{UT} would pass VAE (beta=1) ({report.display.significant(want[UT])} against " \
           f"{report.display.significant(want['VAE (beta=1)'])})" in note
    assert "VAE (beta=0.5) would pass" not in note


def test_an_auto_budget_is_named_in_the_title_and_each_trials_end_reason_kept(tmp_path):
    run = make_run(tmp_path, finished=True)
    search = {**_search(run), "budget": "auto", "epochs": 150, "min_epochs": 20}
    (run / "search.json").write_text(json.dumps(search))
    folder = next(f for f in sorted(run.iterdir()) if (f / "result.json").is_file())
    lines = (folder / "result.json").read_text().splitlines()
    last = json.loads(lines[-1]) | {"end_reason": "plateau at epoch 3 (...)"}
    (folder / "result.json").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    text = report.write_report(run)
    assert text.splitlines()[0].startswith(
        "Test ablation (ablation_test): digits, each trial to its plateau, 20 to 150 epochs")
    trials = pd.read_csv(run / "report" / "trials.csv")
    assert trials.set_index("trial").loc[folder.name, "end_reason"] == "plateau at epoch 3 (...)"


def test_a_one_seed_row_between_ends_the_bold_walk():
    # W best (3 seeds), X one seed, Y worse than X yet untold from W: bold stops at X
    seeds = {"W": [1.00, 0.98, 1.02], "X": [1.05], "Y": [1.10, 0.9, 1.3]}
    column = stats.compare(*_summary(seeds), "↓")
    assert not column.differ("W", "Y") and column.bold == {"W"}


def test_each_metric_counts_its_own_seeds(tmp_path):
    """A completed seed without one metric (not computed) leaves that column's interval and
    tests to the seeds that have it."""
    run = _fid_run(tmp_path)
    folder = next(f for f in sorted(run.iterdir()) if (f / "result.json").is_file()
                  and '"completed"' in (f / "result.json").read_text()
                  and json.loads((f / "params.json").read_text())["config"]["beta"] == 1.0)
    lines = [json.loads(t) for t in (folder / "result.json").read_text().splitlines()]
    lines[-1]["eval/fid_rec"] = "not computed: no features"
    (folder / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    table = report.ablation_table(report.load_trials(run), _search(run))
    row = "VAE (beta=1)"
    assert table.loc[row, "n"] == 3 and table.loc[row, "eval/fid_rec n"] == 2
    fids = pd.to_numeric(report.load_trials(run).query("label == 'VAE' and status == "
                                                       "'completed'")["eval/fid_rec"],
                         errors="coerce").dropna()
    fids = fids[fids.index.isin(report.load_trials(run).index[
        report.load_trials(run)["config/beta"] == 1.0])]
    assert table.loc[row, "eval/fid_rec ci95"] == pytest.approx(
        stats.ci_halfwidth(fids.std(ddof=1), 2))
