"""The statistics behind a table column: which rows the seeds tell apart, and how many seeds
would tell apart the ones they do not.

- A cell's interval: the 95% confidence interval of the mean over seeds, mean ± t_{0.975, n-1}
  · s / √n (Student's t; at n = 3 the half-width is 2.48 s, not the s a "± std" suggests).
- Which rows differ: Welch's t-test for every pair of rows with two or more seeds
  (scipy.stats.ttest_ind_from_stats on each row's mean, std and n), Holm's step-down correction
  over the column's pairs (statsmodels.stats.multitest.multipletests), at family-wise 5%.
- Compact letters (Piepho 2004, "An algorithm for a letter-based representation of all-pairwise
  comparisons", insert-and-absorb): every row gets one or more letters, two rows share a letter
  exactly where the test does not tell them apart; letters are named in order of the best row
  that holds them, so "a" is the best row's.
- The best within noise (the table's bold): the best mean, and, walking down the means, every
  row until the first that the test tells from the best: bold never skips a better mean for
  a worse one, and never marks a row shown worse than the best.
- Seeds needed: for the closest adjacent pair in the mean's order that the test leaves
  unresolved, the seeds per row that a two-sample t-test needs for 80% power if the observed
  means and pooled spread were the true ones (the noncentral t's power, scipy.stats.nct), at
  Bonferroni's α/m over the column's m pairs (Holm rejects whatever Bonferroni does). A
  planning figure: the observed gap and spread of an unresolved pair are noisy, and Welch's
  test has fewer degrees of freedom than the pooled one the power assumes.

Rows with fewer than two seeds (or no finite spread) are not tested: they get no letter and
are bold only where they have the best mean themselves.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats
from scipy.stats import t as student_t
from scipy.stats import ttest_ind_from_stats

from engine.convergence import as_float  # a value as a float, NaN where it is none

LEVEL = 0.05  # family-wise error rate of a column's pairwise tests; 1 - LEVEL: the intervals
POWER = 0.8  # of the seeds-needed estimate
MAX_SEEDS = 1000  # past this, "more than 1,000"


def ci_halfwidth(std: float, n: int, level: float = 1 - LEVEL) -> float:
    """Half-width of the t confidence interval of a mean of n values with sample std `std`;
    NaN for n < 2 or no finite std."""
    if n is None or n < 2 or std is None or not math.isfinite(std):
        return math.nan
    return float(student_t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def _welch_p(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> float:
    """Two-sided Welch p-value; with no spread in either row, 0 where the means differ and 1
    where they are equal (the test itself is undefined there)."""
    if s1 == 0 and s2 == 0:
        return 1.0 if m1 == m2 else 0.0
    return float(ttest_ind_from_stats(m1, s1, int(n1), m2, s2, int(n2), equal_var=False).pvalue)


@dataclass
class Column:
    """One column's comparison: rows in order of their mean (best first), the pairwise tests,
    letters, bold rows."""
    order: list  # every row with a mean, best first
    tested: list  # the rows with >= 2 seeds and a finite spread, best first
    pairs: pd.DataFrame  # a, b, p, p_holm, differ (one line per pair of tested rows)
    letters: dict = field(default_factory=dict)  # row -> "ab" (tested rows only)
    bold: set = field(default_factory=set)

    def differ(self, a, b) -> bool | None:
        """Whether the test tells a from b; None where either is untested."""
        if a not in self.tested or b not in self.tested or a == b:
            return None
        hit = self.pairs[((self.pairs.a == a) & (self.pairs.b == b))
                         | ((self.pairs.a == b) & (self.pairs.b == a))]
        return bool(hit["differ"].iloc[0])


def compare(mean: pd.Series, std: pd.Series, n: pd.Series, better: str | None) -> Column:
    """The comparison of one column; `better` "↓" (lower is better), "↑", or None (the order
    ascending, and no bold)."""
    have = mean.notna() & np.isfinite(mean.astype(float))
    descending = better == "↑"
    order = list(mean[have].sort_values(ascending=not descending, kind="stable").index)
    tested = [r for r in order if n[r] >= 2 and pd.notna(std[r]) and math.isfinite(std[r])]
    rows = [(a, b, _welch_p(mean[a], std[a], n[a], mean[b], std[b], n[b]))
            for i, a in enumerate(tested) for b in tested[i + 1:]]
    pairs = pd.DataFrame(rows, columns=["a", "b", "p"])
    if len(pairs):
        from statsmodels.stats.multitest import multipletests
        p = pairs["p"].fillna(1.0).to_numpy()  # a NaN p (nothing to test) is no difference
        reject, p_holm, _, _ = multipletests(p, alpha=LEVEL, method="holm")
        pairs["p_holm"], pairs["differ"] = p_holm, reject
    else:
        pairs["p_holm"], pairs["differ"] = pd.Series(dtype=float), pd.Series(dtype=bool)
    column = Column(order, tested, pairs)
    column.letters = letters(tested, [(a, b) for a, b, d in
                                      zip(pairs["a"], pairs["b"], pairs["differ"]) if d])
    if better is not None and order:
        column.bold = _bold(column, mean, better)
    return column


def resolve_claim(pairs: list[tuple], mean: pd.Series, std: pd.Series, n: pd.Series
                  ) -> dict[tuple, bool]:
    """{(a, b): resolved} for the pairs of an order a paper claims: Welch's test of each pair
    whose rows have >= 2 seeds and a finite spread, Holm over these pairs alone. The claim is a
    family the paper fixed before our data, so it is corrected for its own pairs, not for every
    pair of the column (which grows with the rows a study adds beside it: noise_variance's 36
    rows make 630). A pair it cannot test is not resolved."""
    tested = [(a, b) for a, b in pairs
              if all(n.get(r, 0) >= 2 and math.isfinite(as_float(std.get(r)))
                     and math.isfinite(as_float(mean.get(r))) for r in (a, b))]
    if not tested:
        return {}
    from statsmodels.stats.multitest import multipletests
    p = [_welch_p(mean[a], std[a], n[a], mean[b], std[b], n[b]) for a, b in tested]
    reject = multipletests(np.nan_to_num(p, nan=1.0), alpha=LEVEL, method="holm")[0]
    return dict(zip(tested, map(bool, reject)))


def letters(rows: list, different: list[tuple]) -> dict:
    """Piepho's insert-and-absorb: {row: letters} over `rows` (best first; lowest first in a
    column without a direction) such that two rows share a letter exactly where (a, b) is
    not in `different`."""
    if not rows:
        return {}
    groups: list[set] = [set(rows)]
    for a, b in different:
        split = []
        for g in groups:
            if a in g and b in g:  # insert: the group without a, and without b
                split += [g - {a}, g - {b}]
            else:
                split.append(g)
        # absorb: a group inside another says nothing more
        split = [g for i, g in enumerate(split) if g and not any(
            (g < h) or (g == h and j < i) for j, h in enumerate(split))]
        groups = split
    # name the letters in order of the best row that holds them, so the best row reads "a"
    rank = {r: i for i, r in enumerate(rows)}
    groups.sort(key=lambda g: sorted(rank[r] for r in g))
    names = (string.ascii_lowercase + string.ascii_uppercase)
    out = {r: "" for r in rows}
    for k, g in enumerate(groups):
        for r in g:
            out[r] += names[k] if k < len(names) else f"[{k}]"
    return out


def _bold(column: Column, mean: pd.Series, better: str) -> set:
    """The best row and every tested row before the first (in the mean's order) that the
    test tells from the best: monotone in the mean, and never a row shown worse than the best
    (a worse-mean row with a spread too wide to test stays plain once a better one is
    resolved, rather than pulling every row between into bold)."""
    best = column.order[0]
    if best not in column.tested:
        return {best}  # a one-seed best: nothing can be tested against it
    marked = {best}
    for row in column.order[1:]:
        # an untested row (one seed) ends the walk too: marking a worse row past it would
        # skip its better mean
        if row not in column.tested or column.differ(best, row):
            break
        marked.add(row)
    return marked


def seeds_needed(m1: float, s1: float, m2: float, s2: float, pairs: int,
                 power: float = POWER) -> float:
    """Seeds per row for `power` to tell two rows apart at their observed means and pooled
    spread, two-sided at LEVEL / pairs; inf where the means are equal, math.nan where neither
    row has a spread."""
    spread = math.sqrt((s1 ** 2 + s2 ** 2) / 2)
    if not spread > 0:
        return math.nan
    effect = abs(m1 - m2) / spread
    if effect == 0:
        return math.inf
    # the two-sided power at n = 2..MAX_SEEDS from the noncentral t (as statsmodels'
    # TTestIndPower.power, whose solver fails both where n is large and where the rows lie
    # far apart: scipy's nct.cdf returns NaN for the far tail there, a probability of ~0)
    n = np.arange(2, MAX_SEEDS + 1)
    df, nc = 2 * n - 2, effect * np.sqrt(n / 2)
    crit = scipy.stats.t.isf(LEVEL / max(pairs, 1) / 2, df)
    with np.errstate(all="ignore"):
        reached = (np.nan_to_num(scipy.stats.nct.sf(crit, df, nc))
                   + np.nan_to_num(scipy.stats.nct.cdf(-crit, df, nc))) >= power
    return float(n[reached.argmax()]) if reached.any() else math.inf


def unresolved_adjacent(column: Column, mean: pd.Series, std: pd.Series) -> list[tuple]:
    """(a, b, seeds per row needed) of every adjacent pair in the mean's order (tested rows)
    that the test does not resolve, the hardest (most seeds; inestimable last) first."""
    m = len(column.pairs)
    found = [(a, b, seeds_needed(mean[a], std[a], mean[b], std[b], m))
             for a, b in zip(column.tested, column.tested[1:]) if not column.differ(a, b)]
    return sorted(found, key=lambda f: (math.isnan(f[2]), -f[2] if not math.isnan(f[2]) else 0))


def closest_unresolved(column: Column, mean: pd.Series, std: pd.Series) -> tuple | None:
    """The unresolved adjacent pair that needs the most seeds, None where every adjacent
    pair is resolved."""
    found = unresolved_adjacent(column, mean, std)
    return found[0] if found else None


def describe_seeds(need: float) -> str:
    if math.isnan(need):
        return "not estimable (no spread)"
    if math.isinf(need):
        return f"more than {MAX_SEEDS:,} seeds per row (the means are too close)"
    return f"≈ {int(need)} seeds per row"
