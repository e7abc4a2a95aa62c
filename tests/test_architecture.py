"""The layering of agent/, tools/ and telephony/, read from the source with ``ast``.

Every ``import`` and ``from ... import`` counts, function-local ones included (a deferred import
still ties the modules together). An edge goes to the most specific module named: ``from
tools.store import db`` is an edge to ``tools.store.db``; the parent packages' ``__init__`` that
Python runs on the way are not counted, or every package that re-exports its submodules would
be a cycle with each of them.

- no import cycle among the three packages' modules;
- tools/ is framework-free: no pipecat, FastAPI or Starlette, and nothing of agent/ or telephony/;
- telephony/ does not reach into agent/ or tools/ (the app hands it what it needs, through
  telephony.host's protocols);
- pipecat is imported only where pipeline code lives: the pipeline assembly and its processors,
  the pipecat service wrapping the local LLM, the provider factories, the local STT service
  (agent.whisper), the fault handler, the transport, the turn strategies, and the two
  serializers. The call session, the prompts, the
  app and the admin console stay pipecat-free, so they can be built and tested without it.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "tools", "telephony")
FRAMEWORKS = ("pipecat", "fastapi", "starlette")
PIPECAT_ALLOWED = frozenset(
    {
        "agent.pipeline",
        "agent.processors",
        "agent.brain.service",
        "agent.providers",
        "agent.faults",
        "agent.transport",
        "agent.turns",
        "agent.hibari",
        "agent.clauses",
        "agent.vad",
        "agent.whisper",
        "agent.turn_audio",
        "telephony.serializer",
        "telephony.browser_serializer",
    }
)


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)  # dotted names as written (absolute)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute dotted name a ``from`` import names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: Module) -> set[str]:
    """Every dotted name the module imports, as imported: ``from a.b import c`` gives ``a.b.c``
    (a module or a name in ``a.b``), ``import a.b`` gives ``a.b``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def load_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name, is_package = _module_name(path)
            modules[name] = Module(name, path, is_package)
    for module in modules.values():
        module.imports = _imports(module)
    return modules


def _target(name: str, modules: dict[str, Module]) -> str | None:
    """The most specific module of the three packages that ``name`` is or is in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def internal_edges(module: Module, modules: dict[str, Module]) -> set[str]:
    """The modules of the three packages that ``module`` imports."""
    targets = {_target(name, modules) for name in module.imports}
    return {t for t in targets if t is not None and t != module.name}


def top(name: str) -> str:
    return name.split(".")[0]


MODULES = load_modules()


def test_the_graph_is_really_read() -> None:
    """The checks below would pass on an empty graph: make sure it is the real one."""
    assert {"agent.app", "tools.catalog", "telephony.codec", "agent.admin.access"} <= set(MODULES)
    assert "tools.actions.calendar" in internal_edges(MODULES["tools.catalog"], MODULES)
    assert "telephony.codec" in internal_edges(MODULES["agent.app"], MODULES)
    assert "pipecat.pipeline.pipeline.Pipeline" in MODULES["agent.pipeline"].imports
    # Function-local imports count: agent/providers.py imports agent.prompts inside a function.
    assert "agent.prompts" in internal_edges(MODULES["agent.providers"], MODULES)


def test_no_import_cycle() -> None:
    graph = {name: internal_edges(module, MODULES) for name, module in MODULES.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("tools", {*FRAMEWORKS, "agent", "telephony"}),
        ("telephony", {"agent", "tools"}),
    ],
)
def test_layering(package: str, forbidden: set[str]) -> None:
    wrong = {
        f"{module.name} imports {name}"
        for module in MODULES.values()
        if top(module.name) == package
        for name in module.imports
        if top(name) in forbidden
    }
    assert not wrong, sorted(wrong)


def test_pipecat_only_in_pipeline_code() -> None:
    users = {
        module.name
        for module in MODULES.values()
        if any(top(name) == "pipecat" for name in module.imports)
    }
    assert users <= PIPECAT_ALLOWED, (
        f"pipecat imported outside pipeline code: {users - PIPECAT_ALLOWED}"
    )
    # The list is kept exact, so it cannot go stale and allow a module that no longer needs it.
    assert users == PIPECAT_ALLOWED, f"no longer importing pipecat: {PIPECAT_ALLOWED - users}"
