"""engine/run/stopper.py: --epochs auto's plateau rule against hand-made metric sequences and
against the report's own convergence mark, its restore, and its place as a Tune Stopper."""
from __future__ import annotations

import json
import math
import random

import pytest

import engine.report as report
from engine.run.stopper import (CONVERGENCE_TOL, CONVERGENCE_WINDOW, MIN_EPOCHS, PATIENCE,
                                WATCHED, PlateauStopper, history_from_lines, past_best,
                                still_moving, window)


def feed(stopper: PlateauStopper, values, trial="t", **watched) -> list[bool]:
    """The stopper's answer after each epoch of `values` (and of any watched sequence)."""
    return [stopper(trial, {"epoch": i + 1, "val/mse": v,
                            **{k.replace("__", "/"): w[i] for k, w in watched.items()}})
            for i, v in enumerate(values)]


def test_the_rule_is_the_reports_convergence_criterion():
    assert (CONVERGENCE_WINDOW, CONVERGENCE_TOL, WATCHED) == (
        report.convergence.CONVERGENCE_WINDOW, report.convergence.CONVERGENCE_TOL,
        report.read.WATCHED)
    assert (MIN_EPOCHS, PATIENCE) == (20, 3)


@pytest.mark.parametrize("n, w", [(1, 0), (2, 1), (9, 1), (14, 1), (15, 2), (24, 2),
                                  (25, 2), (26, 3), (30, 3), (100, 10)])
def test_the_window_is_ten_percent_at_least_one_at_most_half(n, w):
    # round() as the report takes it: 2.5 -> 2 (to even), 2.6 -> 3
    assert window(n) == w


def test_a_hand_made_sequence_stops_at_the_first_epoch_within_one_percent():
    # after epoch 4: (6 - 5) / 5 = 20 % better; after epoch 5: (5 - 4.98) / 4.98 = 0.4 %
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=4)
    assert feed(stopper, [10, 8, 6, 5, 4.98]) == [False, False, False, False, True]
    assert stopper.reason("t") == ("plateau at epoch 5 (val/mse: the mean of epochs 5 within "
                                   "1% of that of epochs 4)")


def test_under_one_percent_is_a_plateau_and_just_over_is_not():
    assert feed(PlateauStopper("val/mse", patience=1, min_epochs=2), [1.0099, 1.0])[-1]
    assert not feed(PlateauStopper("val/mse", patience=1, min_epochs=2), [1.0101, 1.0])[-1]


def test_no_plateau_before_min_epochs_however_flat():
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=20)
    answers = feed(stopper, [1.0] * 20)
    assert answers == [False] * 19 + [True]
    assert stopper.reason("t").startswith("plateau at epoch 20")


def test_the_means_over_two_windows_not_single_epochs():
    # 20 to 22 epochs: windows of 2. Epoch 20 alone is 0.5 % better than epoch 19, but the
    # mean of 19-20 (1.0025) is 2.2 % better than that of 17-18 (1.025): not yet; after 21,
    # 20-21 (1.0) against 18-19 (1.0125): 1.25 %, not yet; after 22, 21-22 (1.0) against
    # 19-20 (1.0025): 0.25 %, a plateau
    values = [2.0] * 16 + [1.03, 1.02, 1.005, 1.0, 1.0, 1.0]
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=20)
    assert feed(stopper, values)[-3:] == [False, False, True]
    assert stopper.reason("t") == ("plateau at epoch 22 (val/mse: the mean of epochs 21-22 "
                                   "within 1% of that of epochs 19-20)")


def test_with_patience_the_criterion_must_hold_at_consecutive_epochs():
    # one noisy epoch (10 -> 10.2) is a "plateau" of a curve still falling 10 % an epoch;
    # three flat epochs in a row are one
    values = [20, 15, 10, 10.2, 9, 8, 7, 7, 7, 7]
    assert feed(PlateauStopper("val/mse", patience=1, min_epochs=3), values).index(True) == 3
    stopper = PlateauStopper("val/mse", min_epochs=3)  # patience 3
    assert feed(stopper, values).index(True) == 9
    assert stopper.reason("t") == ("plateau at epoch 10 (val/mse: the mean of epochs 10 within "
                                   "1% of that of epochs 9, as at the 2 epochs before)")


def test_a_steadily_improving_trial_runs_to_the_cap_and_says_so():
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=3, max_epochs=12)
    answers = feed(stopper, [0.95 ** i for i in range(12)])  # 5 % better every epoch
    assert answers == [False] * 11 + [True]
    assert stopper.reason("t") == ("max epochs 12 reached, no plateau (val/mse by 5.3% over "
                                   "the last 1 epochs)")


def test_a_worse_metric_is_a_plateau_and_max_mode_turns_the_sign():
    assert feed(PlateauStopper("val/mse", patience=1, min_epochs=2), [1.0, 1.2])[-1]  # got worse: flat
    up = PlateauStopper("val/psnr", "max", min_epochs=2, patience=1)
    assert not up("t", {"epoch": 1, "val/psnr": 20.0})
    assert not up("t", {"epoch": 2, "val/psnr": 21.0})  # 4.8 % better
    assert up("t", {"epoch": 3, "val/psnr": 21.1})  # 0.47 %


def test_a_watched_decoder_variance_that_still_moves_holds_the_trial():
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=2)
    flat = [1.0] * 6
    sigma = [1.0, 0.5, 0.25, 0.2, 0.199, 0.199]  # moving by 25 %, then 0.5 %
    assert feed(stopper, flat, train__sigma_x2=sigma) == [False, False, False, False, True,
                                                          True]
    # a row that reports no decoder variance is judged by its metric alone
    assert still_moving({"val/mse": flat, "train/sigma_x2": [math.nan] * 6}, "val/mse") == {}
    assert still_moving({"val/mse": [1.0]}, "val/mse") is None  # one epoch: nothing to judge


# --- early stopping (Search.early_stopping): the metric past its best ends the trial ---

def test_past_best_compares_the_last_window_with_the_best_window_before_it():
    # 20 epochs: windows of 2; the last (19-20: 1.05) against the best window ending before
    # epoch 19 (11-12: 1.0): 4.8 % worse, the best ending at epoch 12
    values = [2.0] * 10 + [1.0, 1.0] + [1.02] * 6 + [1.05, 1.05]
    worse, best = past_best(values)
    assert (best, round(worse, 6)) == (12, round(0.05 / 1.05, 6))
    # 18 epochs: 17-18 (1.02) against 11-12, relative to the last mean: 0.02 / 1.02
    worse, best = past_best(values[:18])
    assert (best, round(worse, 6)) == (12, round(0.02 / 1.02, 6))
    assert past_best([1.0] * 19 + [1.0099 * 2 - 1.0]) is None  # 19-20's mean 1.0099: 0.98 %
    assert past_best([1.0] * 19 + [1.0103 * 2 - 1.0])  # 1.0103: 1.02 %
    assert past_best([3.0, 2.0, 1.0]) is None  # still improving
    assert past_best([1.0, 2.0, 3.0], "max") is None and past_best([3.0, 2.0], "max")
    assert past_best([1.0, math.nan, 1.2]) is None  # a non-finite value: nothing judged


def test_early_stopping_ends_a_trial_whose_metric_rose_while_its_variance_still_moves():
    values = [10, 8, 6, 5, 5.2, 5.4, 5.6, 5.8]  # best at epoch 4, then worse every epoch
    sigma = [0.5 ** e for e in range(8)]  # the training fit's variance, halving: moving
    plain = PlateauStopper("val/mse", min_epochs=2, max_epochs=8)
    assert feed(plain, values, train__sigma_x2=sigma) == [False] * 7 + [True]
    assert plain.reason("t").startswith("max epochs 8 reached, no plateau")
    early = PlateauStopper("val/mse", min_epochs=2, max_epochs=8, early_stopping=True)
    # past its best at epochs 5 (3.8 %), 6 (7.4 %) and 7: the third in a row ends it
    assert feed(early, values, train__sigma_x2=sigma) == [False] * 6 + [True, True]
    # (its reason at the last result fed: (5.8 - 5) / 5.8)
    assert early.reason("t") == ("past its best at epoch 8 (val/mse: the mean of epochs 8 "
                                 "13.8% worse than that of epochs 4, as at the 2 epochs before)")


def test_a_stop_where_both_rules_held_says_so():
    # past its best at epoch 5 (the variance still moving), a plateau of everything at 6, 7
    values, sigma = [10, 8, 6, 5, 5.2, 5.2, 5.2, 5.2], [1, .5, .25, .12, .06, .06, .06, .06]
    early = PlateauStopper("val/mse", min_epochs=2, early_stopping=True)
    assert feed(early, values[:7], train__sigma_x2=sigma).index(True) == 6
    assert early.reason("t") == ("plateau at epoch 7 (val/mse: the mean of epochs 7 within 1% "
                                 "of that of epochs 6, a plateau or past its best at the 2 "
                                 "epochs before)")
    plain = PlateauStopper("val/mse", min_epochs=2)  # a plateau at 6, 7 and 8
    assert feed(plain, values, train__sigma_x2=sigma).index(True) == 7


def test_early_stopping_waits_for_a_flat_metric_whose_variance_still_moves():
    # level within 1 % (no worse than its best by more): the variance still decides
    values = [10, 8, 6, 5, 5.04, 5.0, 5.04, 5.0, 5.04, 5.0]
    sigma = [0.5 ** e for e in range(10)]
    early = PlateauStopper("val/mse", min_epochs=2, early_stopping=True)
    assert not any(feed(early, values, train__sigma_x2=sigma))
    flat = [1.0] * 10  # and everything flat is a plateau, so called
    assert feed(PlateauStopper("val/mse", min_epochs=2, early_stopping=True), flat)[-1]
    assert still_moving({"val/mse": values, "train/sigma_x2": sigma}, "val/mse",
                        early_stopping=True) == {"train/sigma_x2": 1.0}


def test_an_early_stopped_history_restored_decides_as_the_uninterrupted_one():
    values = [1 + math.exp(-0.3 * e) + 0.002 * max(0, e - 25) for e in range(60)]  # rises
    sigma = [0.9 ** e for e in range(60)]
    whole = PlateauStopper("val/mse", min_epochs=20, early_stopping=True)
    stop = feed(PlateauStopper("val/mse", min_epochs=20, early_stopping=True), values,
                train__sigma_x2=sigma).index(True)
    answers = feed(whole, values[:stop + 1], train__sigma_x2=sigma)
    assert 25 < stop < 59 and whole.reason("t").startswith(f"past its best at epoch {stop + 1}")
    for k in (1, 20, stop - 1):
        half = PlateauStopper("val/mse", min_epochs=20, early_stopping=True)
        feed(half, values[:k], trial="a", train__sigma_x2=sigma[:k])
        again = PlateauStopper("val/mse", min_epochs=20, early_stopping=True)
        again.restore("b", json.loads(json.dumps(half.history("a"))))
        rest = [again("b", {"epoch": e + 1, "val/mse": values[e], "train/sigma_x2": sigma[e]})
                for e in range(k, stop + 1)]
        assert rest == answers[k:stop + 1] and again.reason("b") == whole.reason("t")


def test_the_rule_agrees_with_the_reports_mark_on_random_curves():
    """At every epoch of 200 random curves (noisy power laws, some flat, some rising, some
    with a decoder variance; half of them searches that stop early), the rule finds a plateau
    exactly where the report, reading the same lines, marks the trial converged."""
    rng = random.Random(0)
    checked = early_only = 0
    for i in range(200):
        early = i % 2 == 1
        search = {"metric": "val/mse", "mode": "min", "early_stopping": early}
        n = rng.randint(2, 60)
        a, b, c = rng.uniform(0, 1), rng.uniform(0, 2), rng.uniform(0.1, 2)
        noise = rng.choice([0, 0.002, 0.02])
        rise = rng.choice([0, 0, 0.01])  # overfitting: the curve turns up past its best
        lines = [{"epoch": e, "val/mse": a + b * e ** -c + rise * e + rng.gauss(0, noise) + 0.05,
                  **({"train/sigma_x2": 1 + 2 * e ** -c} if rng.random() < 0.3 else {})}
                 for e in range(1, n + 1)]
        stopper = PlateauStopper("val/mse", patience=1, min_epochs=1, early_stopping=early)
        patient = PlateauStopper("val/mse", min_epochs=1, early_stopping=early)
        for k in range(1, n + 1):
            stops = stopper("t", lines[k - 1])
            converged = report.read.converged(lines[:k], search)["converged"] is True
            assert stops == converged, (k, lines[:k])
            assert not patient("t", lines[k - 1]) or converged  # stricter, never looser
            checked += stops
            history = {name: [line.get(name) for line in lines[:k]]
                       for name in ("val/mse", *WATCHED)}
            early_only += early and stops and PlateauStopper("val/mse", patience=1, min_epochs=1
                                                             ).decide(history) is None
    assert checked > 100 and early_only > 5  # both answers, and early stops, exercised


def test_a_restored_history_decides_as_the_uninterrupted_one():
    values = [0.3 + math.exp(-0.3 * e) for e in range(40)]
    whole = PlateauStopper("val/mse", patience=1, min_epochs=5)
    answers = feed(whole, values)
    stop = answers.index(True)
    for k in (1, 5, stop):  # restored after epoch k from the history a checkpoint holds
        half = PlateauStopper("val/mse", patience=1, min_epochs=5)
        feed(half, values[:k], trial="a")
        again = PlateauStopper("val/mse", patience=1, min_epochs=5)
        again.restore("b", json.loads(json.dumps(half.history("a"))))  # (NaN as JSON does)
        rest = [again("b", {"epoch": e + 1, "val/mse": values[e]})
                for e in range(k, len(values))]
        assert answers[k:] == rest and again.reason("b") == whole.reason("t")


def test_a_repeated_epoch_replaces_the_earlier_result():
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=2)
    feed(stopper, [1.0, 0.5])
    assert stopper("t", {"epoch": 2, "val/mse": 0.999})  # a retried epoch 2: now flat
    assert stopper.history("t")["val/mse"] == [1.0, 0.999]
    with pytest.raises(ValueError, match="epoch 5 after a history of 2"):
        stopper("t", {"epoch": 5, "val/mse": 1.0})


def test_history_from_result_lines_takes_each_epochs_last_line():
    lines = [{"epoch": 1, "val/mse": 2.0}, {"epoch": 2, "val/mse": 1.0},
             {"epoch": 2, "val/mse": 1.5, "train/sigma_x2": 0.1}, {"epoch": 3, "val/mse": 9.0}]
    got = history_from_lines(lines, ("val/mse", "train/sigma_x2"), 2)
    assert got["val/mse"] == [2.0, 1.5] and math.isnan(got["train/sigma_x2"][0])
    assert got["train/sigma_x2"][1] == 0.1
    assert history_from_lines(lines[1:], ("val/mse",), 2) is None  # epoch 1 missing


def test_it_is_a_ray_tune_stopper_that_tune_can_combine():
    from ray.tune.stopper import CombinedStopper, MaximumIterationStopper, Stopper

    import engine.run.ray_backend  # noqa: F401  (registers it)
    stopper = PlateauStopper("val/mse", patience=1, min_epochs=2)
    assert isinstance(stopper, Stopper) and not stopper.stop_all()
    both = CombinedStopper(stopper, MaximumIterationStopper(10))
    assert not both("t", {"epoch": 1, "training_iteration": 1, "val/mse": 1.0})
    assert both("t", {"epoch": 2, "training_iteration": 2, "val/mse": 1.0})
