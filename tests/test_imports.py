"""``import lensdask`` (and the stages built so far) must not pull in heavy optional parts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lensdask

HEAVY = ("tensorflow", "keras", "dask_cuda", "dask_jobqueue", "torch", "jax")


def test_import_lensdask_imports_no_heavy_dependency():
    code = (
        "import sys, lensdask, lensdask.cli, lensdask.catalog.select, lensdask.mock.survey; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_names_the_extra():
    from lensdask.cluster import require

    try:
        require("lensdask_no_such_module", "hpc")
    except ImportError as err:
        assert "pip install 'lensdask[hpc]'" in str(err)
    else:  # pragma: no cover
        raise AssertionError("require() did not fail")


# --- the module import graph -----------------------------------------------------------------

PACKAGE = Path(lensdask.__file__).parent
STAGES = ("catalog", "cutouts", "images", "lensing", "nn", "score", "review", "mock")
"""Stage subpackages: each reads and writes its data through lensdask.formats, never through
another stage (lensdask.pipeline, lensdask.plan and lensdask.cli, the orchestration, may
import every stage)."""

ALLOWED = {
    ("lensdask.mock.lenses", "lensdask.catalog.cuts"): "mock LRGs must pass the LRG cuts",
    ("lensdask.mock.lenses", "lensdask.lensing.image"): "paints the mock survey's lenses",
    ("lensdask.mock.lenses", "lensdask.lensing.mocks"): "draws and renders their arcs",
    ("lensdask.mock.survey", "lensdask.lensing.mocks"): "measures arc peaks as mocks does",
    ("lensdask.mock.survey", "lensdask.lensing.psf"): "the survey's PSF is the arcs' Moffat",
    ("lensdask.mock.render", "lensdask.lensing.psf"): "galaxies use its sub-pixel sampling",
    ("lensdask.score.resident", "lensdask.nn.model"): "rebuilds the network in mixed precision",
    ("lensdask.cutouts.placement", "lensdask.images.match"): "places targets on images by position",
    ("lensdask.images.psf", "lensdask.cutouts.extract"): "cuts stars' stamps as cutouts are cut",
    ("lensdask.score.resident", "lensdask.nn.evaluate"): "predicts in fixed-size batches",
    ("lensdask.cutouts.psf", "lensdask.images.psf"): "measures each tile's PSF on its stars",
    ("lensdask.cutouts.make", "lensdask.images.psf"): "reads a tile's PSF from its headers",
    ("lensdask.lensing.simulate", "lensdask.mock.population"): "arcs take the mock's colours",
}
"""Edges between stages onto pure kernel modules, each with why."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the lensdask modules it imports anywhere in its source (module-level and
    function-level imports; ``from x import y`` is ``x.y`` when that is a module)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_lensdask_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_stages_import_no_other_stage_except_allowed_kernels():
    crossings = sorted(
        (source, target)
        for source, targets in import_graph().items()
        for target in targets
        if stage_of(source) and stage_of(target) and stage_of(source) != stage_of(target)
    )
    unexpected = [
        f"{source} -> {target}" for source, target in crossings if (source, target) not in ALLOWED
    ]
    assert not unexpected, "stage-to-stage imports outside ALLOWED:\n" + "\n".join(unexpected)
    unused = [f"{s} -> {t}" for s, t in ALLOWED if (s, t) not in crossings]
    assert not unused, "ALLOWED edges no module uses any more:\n" + "\n".join(unused)


def test_formats_import_no_stage():
    stages = {
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        if source.startswith("lensdask.formats")
        for target in targets
        if stage_of(target)
    }
    assert not stages, "lensdask.formats imports stages:\n" + "\n".join(sorted(stages))


def test_the_commands_are_built_without_the_stages_dependencies():
    code = (
        "import sys, click; from lensdask.cli import main; "
        "ctx = click.Context(main, info_name='lensdask'); "
        "[main.get_command(ctx, name).get_help(ctx) for name in main.list_commands(ctx)]; "
        "print([m for m in ('numpy', 'pandas', 'dask', 'distributed', *HEAVY) "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}; {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
