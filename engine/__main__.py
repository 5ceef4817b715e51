"""The engine's command line.

    python -m engine report runs/ablation_uae    # write runs/ablation_uae/report/, print the table

Bad input (a folder that is not a run folder) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV) and plots of a finished or partial run",
        description="Write <run folder>/report/ and print the ablation table.")
    report.add_argument("run_dir", metavar="RUN_FOLDER", help="the folder a search wrote")
    args = p.parse_args(argv)

    if args.command == "report":
        # imported here: other commands may need Ray, a report needs only pandas and matplotlib
        from engine.report import NotARunFolder, write_report
        try:
            print(write_report(args.run_dir))
        except NotARunFolder as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
