"""The package's layers: each may import only itself and the layers listed before it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sdpbatch"
LAYERS = ["science", "io", "execution", "control", "workflows", "web", "cli"]
SHARED = {"parameters", "offline", "vocabulary", "__init__"}
NO_IO_IN_SCIENCE = {"open", "h5py", "casacore.tables", "astropy.io", "matplotlib"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sdpbatch" or len(parts) < 2:
        return None
    return parts[1] if parts[1] not in SHARED else "shared"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py")
        if layer in LAYERS:
            yield pytest.param(path, layer, id=str(rel))


@pytest.mark.parametrize(("path", "layer"), list(_modules()))
def test_imports_respect_the_layers(path: Path, layer: str):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1]) | {"shared"}
    bad = [m for m in _imports(path) if _layer(m) not in (None, *allowed)]
    assert not bad, f"{path.name} ({layer}) imports a later layer: {bad}"


@pytest.mark.parametrize(
    "path", [p for p in sorted((PACKAGE / "science").glob("*.py"))], ids=lambda p: p.name
)
def test_science_does_no_io(path: Path):
    text = path.read_text()
    imports = _imports(path)
    assert not [m for m in imports if any(m.startswith(x) for x in NO_IO_IN_SCIENCE)]
    assert "open(" not in text.replace("_open(", "")
