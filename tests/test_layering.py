"""The import rule of ARCHITECTURE.md, enforced: imagesim may use unionfs, never the reverse;
the CLI modules are leaves nothing imports; the engine imports no FUSE binding at module level
except in its FUSE adapter."""

from __future__ import annotations

import ast
import functools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _modules(package: str) -> dict[str, pathlib.Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


@functools.cache
def _edges() -> list[tuple[str, str]]:
    edges = []
    for package in ("unionfs", "imagesim"):
        for name, path in _modules(package).items():
            edges.extend((name, target) for target in _imports(name, path))
    return edges


def test_unionfs_never_imports_imagesim():
    bad = [(a, b) for a, b in _edges() if a.startswith("unionfs") and b.startswith("imagesim")]
    assert bad == []


def test_nothing_imports_a_cli_module():
    def is_cli(mod: str) -> bool:
        return mod in ("unionfs.cli", "imagesim.cli") or mod.startswith("imagesim.cli.")

    bad = [(a, b) for a, b in _edges()
           if is_cli(b) and not is_cli(a) and not a.endswith("__main__")]
    assert bad == []


def test_only_the_fuse_adapter_and_cli_import_the_binding():
    bad = [(a, b) for a, b in _edges()
           if b.split(".")[0] in ("mfusepy", "fuse")
           and a not in ("unionfs.fuse", "unionfs.cli")]
    assert bad == []


def test_the_engine_core_does_not_import_the_fuse_adapter():
    core = {"unionfs.union", "unionfs.layer", "unionfs.upper", "unionfs.entry",
            "unionfs.errors", "unionfs.path", "unionfs.whiteout", "unionfs.diff"}
    bad = [(a, b) for a, b in _edges() if a in core and b.startswith("unionfs.fuse")]
    assert bad == []


def test_the_rule_catches_a_forbidden_edge(tmp_path):
    # the walker itself must see a relative import across packages
    mod = tmp_path / "x.py"
    mod.write_text("from ..imagesim import store\n")
    assert "imagesim.store" in _imports("unionfs.x", mod)
