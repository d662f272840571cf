"""The floors of resdet/DESIGN.md: imports only go down, and there are no import circles.

Every `import resdet...` / `from resdet... import` / relative import in the package (at module level or
inside a function) is read with ast and checked against the floor of the room it names. `from X import
name` is an edge to the module X.name where that is a module (`from . import a`, `from resdet.engine
import hooks`), else to X; the circle check is tested on planted circles of each kind.
"""
import ast
import os

import pytest

PACKAGE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "resdet"))

# Higher floors may import lower ones and their own room; never the other way round.
FLOORS = {
    "benchmarks": 8,  # times the runs' steps against references; nothing imports it
    "runs": 7,
    "pipeline": 6.5,  # tools/predict.py's threaded front end, on the predictor's model call; runs/predict.py above it
    "predictor": 6,  # runs exported models too: above export
    "evaluation": 5, "export": 5,
    "detection": 4, "classification": 4,
    "engine": 3,
    "data": 2, "backbones": 2,
    "config": 1, "utils": 1,
    "": 0,  # resdet/__init__.py (environment set-up only)
}


def _modules(package=PACKAGE):
    for root, _, files in os.walk(package):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(package))[:-3].replace(os.sep, ".")
                yield path, rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: str, module: str, is_package: bool):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "resdet":
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "resdet":
                continue
            # `from X import name`: the module X.name if there is one (the graph resolves a name that is
            # not a module to X); `from resdet import backbones` names a room this way too
            for a in node.names:
                yield node.lineno, f"{target}.{a.name}" if a.name != "*" else target


def test_every_room_has_a_floor():
    rooms = {_room(m) for _, m in _modules()}
    assert rooms <= set(FLOORS), f"rooms without a floor in this test and DESIGN.md: {rooms - set(FLOORS)}"


def test_imports_only_go_down():
    bad = []
    for path, module in _modules():
        here = _room(module)
        for line, target in _imports(path, module, path.endswith("__init__.py")):
            there = _room(target)
            if there in FLOORS and there != here and FLOORS[there] >= FLOORS[here]:
                bad.append(f"{os.path.relpath(path, PACKAGE)}:{line} imports {target} "
                           f"(floor {FLOORS[there]} from floor {FLOORS[here]})")
    assert not bad, "imports running up or across the floors:\n" + "\n".join(bad)


def _circles(package=PACKAGE):
    graph = {}
    for path, module in _modules(package):
        graph[module] = {t for _, t in _imports(path, module, path.endswith("__init__.py")) if t != module}
    # resolve `from resdet.x import name` to the module resdet.x (or its package) that exists
    known = set(graph)
    edges = {m: {t if t in known else t.rsplit(".", 1)[0] for t in ts} & known for m, ts in graph.items()}
    # a package __init__ re-exporting its own modules is not a circle: skip edges into one's own package
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return circles


def test_no_import_circles_between_modules():
    circles = _circles()
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("a_imports_b,b_imports_a", [
    ("from .b import f", "from .a import g"),                       # from a sibling module
    ("from . import b", "from . import a"),                         # a sibling module by name
    ("from resdet.engine import b", "from resdet.engine import a"), # the same, absolute
    ("import resdet.engine.b", "def h():\n    from resdet.engine.a import g"),  # inside a function
])
def test_circle_check_catches_each_way_of_writing_an_import(tmp_path, a_imports_b, b_imports_a):
    engine = tmp_path / "resdet" / "engine"
    engine.mkdir(parents=True)
    (tmp_path / "resdet" / "__init__.py").write_text("")
    (engine / "__init__.py").write_text("")
    (engine / "a.py").write_text(a_imports_b + "\n\ndef g():\n    pass\n")
    (engine / "b.py").write_text(b_imports_a + "\n\ndef f():\n    pass\n")
    (engine / "c.py").write_text("from . import a\nfrom resdet.engine import b\n")  # no circle through c
    assert _circles(str(tmp_path / "resdet")) == ["resdet.engine.a -> resdet.engine.b -> resdet.engine.a"]


@pytest.mark.parametrize("room", ["detection", "classification", "evaluation", "export", "engine", "data", "backbones"])
def test_model_rooms_never_import_a_run(room):
    for path, module in _modules():
        if _room(module) == room:
            for line, target in _imports(path, module, path.endswith("__init__.py")):
                assert _room(target) != "runs", f"{path}:{line} imports {target}"
