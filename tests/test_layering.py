"""Dependencies point one way (docs/ARCHITECTURE.md): each package imports only the layers
below it, read from every module's imports (tests/import_graph.py)."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from tests.import_graph import PACKAGES, REPO, Import, component, imports_in, imports_of

# What each package may import besides itself. `lumos` is the core; the services and the
# gateway talk to each other over HTTP only; `eval` drives the gateway over HTTP; `training`
# builds on eval's datasets, runs the executor's tools and reads recorded runs from the
# gateway's store; `bench` starts the whole stack; `lumos_cli`, the command line, gathers
# everything.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "lumos": frozenset(),
    "services": frozenset({"lumos"}),
    "gateway": frozenset({"lumos"}),
    "eval": frozenset({"lumos"}),
    "training": frozenset({"lumos", "services", "gateway", "eval"}),
    "bench": frozenset({"lumos", "services", "gateway", "eval"}),
    "lumos_cli": frozenset({"lumos", "services", "gateway", "eval", "training", "bench"}),
}
# The executor's image holds the core and services/executor/ only (Dockerfile).
EXECUTOR_MAY_IMPORT = frozenset({"lumos", "services.executor"})


def _violations(package: str, allowed: frozenset[str], root: Path = REPO) -> list[Import]:
    return [
        imp
        for imp in imports_of(package, root)
        if imp.target.split(".")[0] not in allowed | {package}
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    bad = _violations(package, MAY_IMPORT[package])
    assert not bad, (
        f"{package} may import only {sorted(MAY_IMPORT[package]) or 'nothing of the project'}; "
        "move the code to the lower layer, or pass it in from above:\n" + "\n".join(map(str, bad))
    )


def test_the_executor_imports_nothing_of_the_other_services() -> None:
    bad = [
        imp
        for imp in imports_of("services/executor")
        if component(imp.target) not in EXECUTOR_MAY_IMPORT
    ]
    assert not bad, "\n".join(map(str, bad))


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(PACKAGES) == set(MAY_IMPORT)


def test_the_layers_form_no_cycle() -> None:
    try:
        order = list(TopologicalSorter(MAY_IMPORT).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"the layering has a cycle: {exc.args[1]}")
    assert order[0] == "lumos" and order[-1] == "lumos_cli"


def test_the_reader_sees_every_kind_of_import() -> None:
    source = (
        "import gateway.app\n"
        "from eval import metrics\n"
        "def f():\n"
        "    from bench.cli import add_parser\n"
        "from .tools.web import WebAllowList\n"
        "from .. import lumos_thing\n"
    )
    found = sorted(imports_in(source, "services.executor.settings"))
    assert found == [
        (1, "gateway.app"),
        (2, "eval"),
        (4, "bench.cli"),
        (5, "services.executor.tools.web"),
        (6, "services"),
    ]


def test_a_core_module_that_imports_an_outer_layer_is_reported(tmp_path: Path) -> None:
    (tmp_path / "lumos").mkdir()
    (tmp_path / "lumos" / "__init__.py").write_text("")
    (tmp_path / "lumos" / "main.py").write_text("def f():\n    from eval.cli import add_parser\n")
    (bad,) = _violations("lumos", MAY_IMPORT["lumos"], root=tmp_path)
    assert (bad.module, bad.line, bad.target) == ("lumos.main", 2, "eval.cli")
