"""The architecture the README describes, checked: dependencies between domains run one way
(import-linter's contracts in pyproject.toml) and imports stand at the top of files."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
from blinker import Signal
from importlinter.cli import lint_imports

from datapass import signals

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "datapass"

# Wiring that must import late: create_app registers every domain's models and blueprints
# (importing them at the top of the package would load every domain for `import datapass.clock`).
LATE_IMPORTS_ALLOWED = {"datapass/__init__.py"}


def test_domains_depend_one_way():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def _late_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("datapass"):
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno} {inner.module}")
            elif isinstance(inner, ast.Import) and any(
                alias.name.startswith("datapass") for alias in inner.names
            ):
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    return found


def test_imports_of_datapass_stand_at_the_top_of_files():
    late = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if str(path.relative_to(ROOT)) not in LATE_IMPORTS_ALLOWED:
            late.extend(_late_imports(path))
    assert late == [], "imports inside functions:\n" + "\n".join(late)


def test_every_signal_has_its_receiver_once_the_app_is_built(app):
    # A lower domain's act must reach the higher one whatever pages were imported.
    named = {name: value for name, value in vars(signals).items() if isinstance(value, Signal)}
    assert named, "datapass.signals declares no signal"
    deaf = [name for name, signal in named.items() if not signal.receivers]
    assert deaf == []


# Each lifecycle enum is compared by its own domain only (and by the demo data, which seeds
# states): every other domain asks that domain's guards (``states.is_*``/``may_*``/``can_*``)
# or its SQL criteria (``tokens.queries.active()``…).
STATUS_OWNERS = {
    "TokenStatus.": "datapass/tokens/",
    "RequestState.": "datapass/authorizations/",
    "HabilitationStatus.": "datapass/authorizations/",
    "RenewalStatus.": "datapass/lifecycle/",
}
STATUS_COMPARISONS_ALLOWED = ("datapass/demo/",)


def test_no_domain_compares_another_domains_statuses():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(STATUS_COMPARISONS_ALLOWED):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for enum, owner in STATUS_OWNERS.items():
                if enum in line and not name.startswith(owner):
                    found.append(f"{name}:{number} {line.strip()}")
    assert found == [], "ask the owning domain's guards instead:\n" + "\n".join(found)


def test_no_module_imports_itself_back():
    # The layers forbid cycles between domains; this forbids them between any two modules,
    # inside a domain too (models <-> states was one), counting imports inside functions.
    graph = grimp.build_graph("datapass", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert cycles == []
