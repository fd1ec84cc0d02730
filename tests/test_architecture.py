"""The code's shape, held by tests: dependencies point one way, between the
apps and inside each, with no import cycle (imports inside functions count),
and only django_realtime.bus calls the channel layer. docs/architecture.md
draws the same picture."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("django_realtime", "presence", "notifications", "chat")
# Which package may import which: each only those below it.
MAY_IMPORT = {
    "django_realtime": set(),
    "presence": {"django_realtime"},
    "notifications": {"django_realtime"},
    "chat": {"django_realtime", "presence", "notifications"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names]
            # `from . import sub` imports the submodule, not the package's names.
            named = all(sub in known for sub in submodules)
            targets = submodules if named else [module, *submodules]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_package_imports_only_those_below_it(module):
    package = module.split(".")[0]
    allowed = MAY_IMPORT[package] | {package}
    above = {dep for dep in GRAPH[module] if dep.split(".")[0] not in allowed}
    assert not above, f"{module} imports {sorted(above)}, above {package}"


def test_there_is_no_import_cycle():
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_bus_calls_the_channel_layer():
    callers = sorted(
        name
        for name, path in modules().items()
        if "get_channel_layer" in path.read_text() or "channel_layer." in path.read_text()
    )
    # layers.py *is* a layer (django_realtime.layers); health reads its config.
    assert callers == ["django_realtime.bus"]
