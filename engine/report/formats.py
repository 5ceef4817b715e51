"""The ablation table as files: Markdown (table.md, and what the console prints) and LaTeX
(table.tex: a float with siunitx columns), from format_table's cells with its bold marks."""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

import pandas as pd


def _emboldened(shown: pd.DataFrame, mark: Callable[[str], str]) -> pd.DataFrame:
    """`shown` with mark(cell) at format_table's bold positions."""
    out = shown.copy()
    for row, col in shown.attrs.get("bold", ()):
        out.iat[row, col] = mark(out.iat[row, col])
    return out


def markdown(shown: pd.DataFrame) -> str:
    flat = _emboldened(shown, lambda c: f"**{c}**")
    flat.columns = [metric if top == "trials" else f"{top}: {metric}"
                    for top, metric in shown.columns]
    # disable_numparse: the cells are already formatted; tabulate would round them again
    return flat.to_markdown(disable_numparse=True)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
          "*": "{*}",  # braced: after a row's \\ a bare * would read as \\*
          "±": r"$\pm$", "—": "---", "–": "--", "×": r"$\times$", "·": r"$\cdot$",
          "≤": r"$\leq$", "≥": r"$\geq$", "√": r"$\surd$", "↓": r"$\downarrow$",
          "↑": r"$\uparrow$"}
_GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi",
                   "Psi", "Omega"}


def _latex(text) -> str:
    """Plain ASCII LaTeX for any text (labels like "UT-VAE*-full-Σ", metrics like "val/mse"),
    so table.tex compiles under pdflatex with no package for Unicode."""
    return "".join(_LATEX.get(ch) or (ch if ord(ch) < 128 else _latex_unicode(ch))
                   for ch in str(text))


def _latex_unicode(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if name.startswith("SUPERSCRIPT "):
        return f"$^{{{unicodedata.normalize('NFKC', ch)}}}$"
    if name.startswith("SUBSCRIPT "):
        return f"$_{{{unicodedata.normalize('NFKC', ch)}}}$"
    greek = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER (FINAL )?([A-Z]+)", name)
    if greek:
        letter = greek.group(3).capitalize()
        if greek.group(1) == "SMALL":
            return "o" if letter == "Omicron" else f"$\\{letter.lower()}$"
        return f"$\\{letter}$" if letter in _GREEK_CAPITALS else f"$\\mathrm{{{letter[0]}}}$"
    ascii_text = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return "".join(_LATEX.get(c, c) for c in ascii_text) or "?"


# how table.tex sets numbers: bold read from the cell's \bfseries (detect-weight, in text
# mode), no thin spaces between groups of three digits (the report's own cells have none)
SISETUP = r"\sisetup{detect-weight, mode=text, group-digits=none}"
# a row at most this many characters long fits one column of a two-column page at \small
COLUMN_CHARACTERS = 60
_NUM = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"  # a number as display.cell writes it: "1.235e+06"
# a table cell as display.cell writes it: "0.01471 ± 0.0006 ab", "0.008000 (n=1)", "12.5 ± –"
_CELL = re.compile(rf"^(?P<mean>{_NUM})(?: ± (?P<spread>{_NUM}|–))?(?P<note> \(n=\d+\))?"
                   r"(?: (?P<letters>[a-zA-Z]+))?$")


def latex_table(shown: pd.DataFrame, notes: list[str], caption: str = "",
                label: str = "") -> str:
    """A table float to \\input in a paper: booktabs rules, siunitx S columns that align every
    number on its decimal point (a metric's mean and its ± half-width each in a column of its
    own, its letters and "(n=1)" as text after them), bold (\\bfseries) where format_table
    marks the best, a cell that is no number ("—") braced as text. `table` where a row fits a
    column (COLUMN_CHARACTERS), else `table*` across both; scaled down to the width only where
    it is still wider. The notes as comments above it."""
    bold = shown.attrs.get("bold", set())
    columns, specs = {}, []
    for k, (top, metric) in enumerate(shown.columns):
        for part, (spec, cells) in _columns(list(shown.iloc[:, k]),
                                            {row for row, col in bold if col == k}).items():
            columns[(_latex(top), _latex(metric), part)] = cells
            specs.append(spec)
    tex = pd.DataFrame(columns, index=[_latex(i) for i in shown.index])
    tabular = tex.style.hide(axis="columns", level=2).to_latex(
        column_format="l" + "".join(specs), hrules=True, multicol_align="c", siunitx=True)
    float_ = "table" if _characters(shown) <= COLUMN_CHARACTERS else "table*"
    label = re.sub(r"[^A-Za-z0-9:.-]", "-", label)
    return ("% needs \\usepackage{booktabs,siunitx,graphicx}\n"
            + "".join(f"% {_latex(n)}\n" for n in notes)
            + f"\\begin{{{float_}}}\n\\centering\n\\small\n{SISETUP}\n"
            + (f"\\caption{{{_latex(caption)}}}\n" if caption else "")
            + (f"\\label{{{label}}}\n" if label else "")
            # the tabular's own width where it fits, the line's where it would not
            + "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{"
            + tabular.rstrip("\n") + "}\n"
            + f"\\end{{{float_}}}\n")


def _columns(cells: list[str], bold: set[int]) -> dict[str, tuple[str, list[str]]]:
    """{part: (column spec, LaTeX cells)} of the columns one of format_table's sets: the
    means' S column, the ± half-widths' where a cell has one, then the text after a number
    (its "(n=1)", its letters) where a cell has some. A column with no number: one text
    column."""
    found = [_CELL.match(str(c)) for c in cells]
    if not any(found):
        return {"": ("c", [_latex(c) for c in cells])}
    weight = ["\\bfseries " if row in bold else "" for row in range(len(cells))]
    out = {"": (f"S[table-format={_format([m['mean'] for m in found if m])}]",
                [w + m["mean"] if m else (f"{{{_latex(c)}}}" if c else "")
                 for c, m, w in zip(cells, found, weight)])}
    spreads = [m["spread"] for m in found if m and m["spread"] not in (None, "–")]
    if any(m and m["spread"] for m in found):
        out["±"] = ("@{\\,}" + (f"S[table-format=\\pm{_format(spreads)}]" if spreads else "c"),
                    ["" if not (m and m["spread"]) else f"{w}\\pm {m['spread']}"
                     if m["spread"] != "–" else f"{{{_latex('± –')}}}"
                     for m, w in zip(found, weight)])
    if any(m and (m["note"] or m["letters"]) for m in found):
        out["after"] = ("@{\\,}l", ["" if not m else _latex((m["note"] or "").strip())
                                    + (f"\\textsuperscript{{{m['letters']}}}"
                                       if m["letters"] else "") for m in found])
    return out


def _format(numbers: list[str]) -> str:
    """siunitx's table-format that holds each of `numbers`: its sign, the most integer digits
    and decimals, the longest exponent ("-2.4e1")."""
    parsed = [re.fullmatch(r"(-?)(\d+)(?:\.(\d+))?(?:e([+-]?)(\d+))?", n) for n in numbers]
    text = (("-" if any(p[1] for p in parsed) else "")
            + f"{max(len(p[2]) for p in parsed)}.{max(len(p[3] or '') for p in parsed)}")
    exponents = [p for p in parsed if p[5]]
    if exponents:
        text += ("e" + ("-" if any(p[4] == "-" for p in exponents) else "")
                 + str(max(len(str(int(p[5]))) for p in exponents)))
    return text


def _characters(shown: pd.DataFrame) -> int:
    """A row's width in characters: the widest label, then each column's widest cell or name."""
    return max((len(str(i)) for i in shown.index), default=0) + sum(
        max([len(str(metric)), *(len(str(c)) + 2 for c in shown.iloc[:, k])])
        for k, (_, metric) in enumerate(shown.columns))
