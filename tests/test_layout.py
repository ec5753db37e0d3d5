"""The code layout keeps its dependencies pointing one way (README "Code map").

Reads the imports of every module (function-level imports included) and checks: the core's
stages depend only downwards (media <- features <- model <- training, the CLI on top); the core
never imports the service; worker/ never imports api/ or service/; api/ never imports service/;
and no module of the core takes part in an import circle.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("vidclass", "api", "worker", "db", "service")
STAGES = {"vidclass.media": 0, "vidclass.features": 1, "vidclass.model": 2, "vidclass.training": 3,
          "vidclass.cli": 4}
SHARED = {"vidclass", "vidclass.paths"}        # CLASS_NAMES and default folders: for every stage


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Project modules a file imports, absolute names (`from x import y` counts x.y when it is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] in PACKAGES and m in MODULES}


FILES = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
MODULES = set(FILES)
GRAPH = {m: imports_of(p) for m, p in FILES.items()}


def stage(module: str):
    for prefix, rank in STAGES.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def test_every_core_module_is_in_a_stage_or_shared():
    core = [m for m in MODULES if m.startswith("vidclass.")]
    assert core and all(stage(m) is not None or m in SHARED for m in core), \
        [m for m in core if stage(m) is None and m not in SHARED]


def test_core_stages_depend_only_downwards():
    wrong = [(m, i) for m, deps in GRAPH.items() if stage(m) is not None
             for i in deps if stage(i) is not None and stage(i) > stage(m)]
    assert wrong == []


def test_core_never_imports_the_service():
    wrong = [(m, i) for m, deps in GRAPH.items() if m.split(".")[0] == "vidclass"
             for i in deps if i.split(".")[0] != "vidclass"]
    assert wrong == []


def test_worker_and_api_do_not_reach_up():
    wrong = [(m, i) for m, deps in GRAPH.items() for i in deps
             if (m.startswith("worker") and i.split(".")[0] in ("api", "service"))
             or (m.startswith("api") and i.split(".")[0] == "service")]
    assert wrong == []


def test_no_import_circle_in_the_core():
    core = {m: {i for i in deps if i.startswith("vidclass") and i != m and i not in SHARED}
            for m, deps in GRAPH.items() if m.startswith("vidclass")}
    # a package's __init__ is not an edge to its modules: `from vidclass.model import x` names x
    core = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in core.items()}
    done, path, circles = set(), [], []

    def visit(m):
        if m in path:
            circles.append(path[path.index(m):] + [m])
            return
        if m in done:
            return
        path.append(m)
        for i in sorted(core.get(m, ())):
            visit(i)
        path.pop()
        done.add(m)

    for m in sorted(core):
        visit(m)
    assert circles == []


def test_the_checker_sees_imports():
    """The checks above would pass on an empty graph: make sure they read real edges."""
    assert "vidclass.features.pipeline" in GRAPH["vidclass.features.backbone"]
    assert "vidclass.training.linear_fit" in GRAPH["vidclass.training.recipes"]
    assert "worker.job_run" in GRAPH["worker.tasks"]
