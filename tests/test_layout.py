"""Import rules that keep the architecture as the folders show it (read from the source, so
a function-level import counts as much as one at the top of a module)."""
from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path, modules: set[str] | None = None) -> set[str]:
    """Every module `path` imports, top level or inside a function. With `modules` (the
    names of a package's modules), `from package import name` counts as an import of the
    module package.name where there is one, and of the package (its __init__) only for a
    name that is not a module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            members = {f"{node.module}.{a.name}" for a in node.names}
            found = members & (modules or set())
            out.update(found)
            if not modules or found != members:
                out.add(node.module)
    return out


def importers(folder: str, package: str) -> dict[str, set[str]]:
    """file -> the modules of `package` it imports, for the files of `folder` that do."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        hits = {m for m in imports(path) if m == package or m.startswith(package + ".")}
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def test_only_the_ray_package_imports_ray():
    assert {str(Path(p).parent) for p in importers("engine", "ray")} == {
        "engine/run/ray_backend"}


def test_models_import_nothing_of_the_engine_nor_ray():
    assert importers("models", "engine") == {} and importers("models", "ray") == {}


def test_a_config_is_validated_without_torch():
    assert not {m for m in imports(ROOT / "models/config.py")
                if m.split(".")[0] in ("torch", "numpy", "ray")}


def test_the_report_imports_neither_torch_nor_ray_nor_the_trial_code():
    """The report reads a run folder: it runs where no trial ever ran (a laptop with the
    folder copied), so it needs pandas and matplotlib, not torch, Ray or the models."""
    names = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "engine/report").rglob("*.py"))
    assert len(names) >= 2
    for name in names:
        bad = {m for m in imports(ROOT / name)
               if m.split(".")[0] in ("torch", "ray", "models")
               or m in ("engine.run.trial", "engine.eval.evaluate", "engine.run.ray_backend")}
        assert not bad, (name, bad)


def test_the_evaluation_group_names_import_nothing():
    """The report takes the group names from engine/eval/groups/__init__.py, so that file
    (and the packages above it) must not bring torch with it."""
    for name in ("engine/__init__.py", "engine/eval/__init__.py", "engine/eval/groups/__init__.py"):
        assert imports(ROOT / name) <= {"__future__"}, name


def test_evaluation_data_and_report_never_import_the_search():
    """Dependencies point one way: engine/run/ drives evaluation, data and the report; none of
    them knows of a search, a Tune trial or a run spec, so each runs without one (the report
    on a copied folder, `evaluate` from `python -m engine evaluate`)."""
    for folder in ("engine/eval", "engine/data", "engine/report"):
        assert importers(folder, "engine.run") == {}, folder


def test_data_imports_nothing_of_the_evaluation_the_search_or_the_report():
    """engine/data/ is a layer below them: the evaluation and the search read data sets from it
    (the report reads run folders only), and it needs none of them; the cache folder it shares
    with the evaluation's caches is engine.files.cache_dir."""
    assert len(list((ROOT / "engine/data").rglob("*.py"))) >= 2
    for package in ("engine.eval", "engine.run", "engine.report"):
        assert importers("engine/data", package) == {}, package


def test_search_run_is_a_pipeline_of_at_most_30_lines():
    """search.run: parse, prepare the spec, connect, save, execute, finish (issue 14)."""
    tree = ast.parse((ROOT / "engine/run/search.py").read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert run.end_lineno - run.lineno + 1 <= 30  # its docstring and signature included


def test_the_rules_see_a_function_level_import():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.py"
        path.write_text("def f():\n    from ray import tune\n    import torch.nn\n")
        assert imports(path) == {"ray", "torch.nn"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_engine_has_no_import_circle():
    """Issue 32: engine/run's seven files imported each other in two loops (the Search type
    from search.py, which imports the CLI, the folder and the spec; spec -> ray_backend ->
    trial -> spec). Every import counts, top level, in a function or under TYPE_CHECKING;
    `from package import module` is an import of that module (a package's __init__ may import
    its modules, which take their siblings so)."""
    modules = {_module(p): p for p in (ROOT / "engine").rglob("*.py")}
    names = set(modules)
    graph = {name: {m for m in imports(path, names) if m in names and m != name}
             for name, path in modules.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"an import circle: {' -> '.join(e.args[1])}") from None
    assert len(order) == len(modules)
    assert not graph["engine.run.types"] & {m for m in modules if m.startswith("engine.run")}


def test_a_trial_worker_imports_neither_the_command_line_nor_the_run_folder():
    """Ray's worker imports engine.run.ray_backend (its trainables), and so the package
    engine.run: that must not bring the CLI, the run folder, the spec or the pipeline."""
    code = ("import sys, engine.run.ray_backend; "
            "print(' '.join(m for m in sys.modules if m.startswith('engine.run')))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split())
    assert "engine.run.ray_backend" in loaded and "engine.run.trial" in loaded
    assert not loaded & {"engine.run.cli", "engine.run.folder", "engine.run.spec",
                         "engine.run.search", "engine.run.resume"}, loaded


def test_importing_the_ray_package_sets_no_environment_variable():
    """Issue 32: Ray's and Tune's settings are set where Ray starts (ray_backend.init), not by
    an import, which changed seven variables of any process that merely imported the engine."""
    code = ("import os, json, ray, ray.tune, ray.train, sklearn, torch, torchvision; "  # theirs
            "before = dict(os.environ); import engine.run.ray_backend; "
            "print(json.dumps(sorted(k for k in set(before) | set(os.environ) "
            "if before.get(k) != os.environ.get(k))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
