"""The ablation table as files: Markdown (table.md, and what the console prints) and LaTeX
(table.tex), from format_table's cells with its bold marks."""
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
    so table.tex compiles under pdflatex without extra packages (booktabs aside)."""
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


def latex_table(shown: pd.DataFrame, notes: list[str]) -> str:
    """booktabs, each numeric column aligned on its decimal points (_aligned_column)."""
    bold = shown.attrs.get("bold", set())
    escaped = shown.map(_latex)
    for k in range(shown.shape[1]):
        cells = _aligned_column(list(shown.iloc[:, k]),
                                {row for row, col in bold if col == k})
        if cells is not None:
            escaped[escaped.columns[k]] = cells
    escaped.attrs["bold"] = {(row, col) for row, col in bold
                             if not _NUMBER.match(str(shown.iat[row, col]))}
    escaped = _emboldened(escaped, lambda c: f"\\textbf{{{c}}}")
    escaped.index = [_latex(i) for i in shown.index]
    escaped.columns = pd.MultiIndex.from_tuples(
        [(_latex(top), _latex(metric)) for top, metric in shown.columns])
    comments = "".join(f"% {_latex(n)}\n" for n in notes)
    return ("% needs \\usepackage{booktabs,calc}\n" + comments
            + escaped.to_latex(escape=False, multicolumn_format="c",
                               column_format="l" + "c" * escaped.shape[1]))


# a table cell as display.cell writes it: "0.01471 ± 0.0006", "0.008000 (n=1)", "12.5 ± 3"
_NUMBER = re.compile(r"^(?P<mi>-?\d+)(?P<mf>\.\d+)?"
                     r"(?: ± (?P<si>\d+)(?P<sf>\.\d+)?)?(?P<note> \(n=\d+\))?"
                     r"(?: (?P<letters>[a-zA-Z]+))?$")


def _aligned_column(cells: list, bold: set[int]) -> list[str] | None:
    """The LaTeX of a column's cells with every mean's and every std's decimal point at one
    place: each part in a box as wide as the column's widest in bold (calc's \\widthof), the
    integer parts right-aligned and the fractions left-aligned in theirs, so bold cells (bold
    digits are wider) align too. None where no cell is a number."""
    parsed = [_NUMBER.match(str(c)) for c in cells]
    found = [m for m in parsed if m]
    if not found:
        return None

    def widest(part: str) -> str:
        return max((m[part] or "" for m in found), key=len)
    parts = {p: widest(p) for p in ("mi", "mf", "si", "sf", "note", "letters")}

    def box(text: str, part: str, side: str, heavy: bool) -> str:
        if not parts[part]:
            return ""
        template = re.sub(r"\d", "0", parts[part])  # the widest digits: every digit as 0
        shown = f"\\textbf{{{text}}}" if heavy and text else text
        return (f"\\makebox[\\widthof{{\\textbf{{{_latex(template)}}}}}][{side}]"
                f"{{{shown}}}")

    out = []
    for k, (cell, m) in enumerate(zip(cells, parsed)):
        if not m:
            text = _latex(cell)
            out.append(f"\\textbf{{{text}}}" if k in bold else text)
            continue
        heavy = k in bold
        pm = "\\,$\\pm$\\," if m["si"] else "\\phantom{\\,$\\pm$\\,}"
        out.append(box(m["mi"], "mi", "r", heavy) + box(m["mf"] or "", "mf", "l", heavy)
                   + ((pm + box(m["si"] or "", "si", "r", heavy)
                       + box(m["sf"] or "", "sf", "l", heavy)) if parts["si"] else "")
                   + box(_latex(m["note"] or ""), "note", "l", heavy)
                   + (f"\\,\\textsuperscript{{{box(m['letters'] or '', 'letters', 'l', False)}}}"
                      if parts["letters"] else ""))
    return out
