"""The layer table of the README, enforced on the real source: no import runs up the table, no cycles.

A negative test builds a small package that breaks each rule once, so the checks are known to fail on a
real violation (an import inside a function, a relative import, a string registry, a cycle).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layering import import_graph, layer_index, part_cycles, readme_layers, upward_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mmdet_deploy"

#: The table this test enforces; the README's Development section must show the same one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("mmdet_deploy", "errors", "deps", "contract", "parity", "fileio")),
    ("engine support", ("tensorrt",)),
    ("model and runtime", ("model", "runtime")),
    ("build", ("export", "calibration")),
    ("benchmarks", ("benchmarks",)),
    ("cli", ("cli",)),
]


def test_the_readme_shows_the_enforced_table() -> None:
    assert readme_layers((ROOT / "README.md").read_text(encoding="utf-8")) == LAYERS


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"}
    assert parts | {"mmdet_deploy"} == set(layer_index(LAYERS))


def test_no_import_runs_up_the_layer_table() -> None:
    edges = import_graph(PACKAGE)
    assert len(edges) > 100  # the graph really was read
    assert upward_imports(edges, LAYERS) == []


def test_no_cycle_between_parts() -> None:
    assert part_cycles(import_graph(PACKAGE)) == []


def test_the_tensorrt_backend_does_not_reach_the_exporter() -> None:
    """The cycle the review found: runtime/backends/tensorrt.py imported export.tensorrt.*."""
    edges = [e for e in import_graph(PACKAGE) if e.source == "mmdet_deploy.runtime.backends.tensorrt"]
    assert {e.target for e in edges} >= {"mmdet_deploy.tensorrt.compat", "mmdet_deploy.tensorrt.sidecar"}
    assert not any(e.target.startswith("mmdet_deploy.export") for e in edges)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


@pytest.fixture()
def broken(tmp_path: Path) -> Path:
    """A package with one violation of each kind, and one allowed import of each kind."""
    return _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/runtime/__init__.py": "from pkg.errors import *  # allowed: down the table\n",
        "pkg/runtime/run.py": "def f():\n    from pkg.export import build  # up, inside a function\n",
        "pkg/runtime/backends/__init__.py": "from ...cli import main  # up, relative\n",
        "pkg/runtime/registry.py": "BACKENDS = {'x': 'pkg.benchmarks.rows:Row'}  # up, by name\n",
        "pkg/export/__init__.py": "",
        "pkg/export/build.py": "import pkg.calibration.gate  # same layer: allowed, but see the cycle\n",
        "pkg/calibration/__init__.py": "",
        "pkg/calibration/gate.py": "from pkg import export  # closes the export <-> calibration cycle\n",
        "pkg/benchmarks/__init__.py": "", "pkg/benchmarks/rows.py": "",
        "pkg/cli/__init__.py": "", "pkg/cli/main.py": "",
        "pkg/extra.py": "import pkg.errors\n",
    })  # fmt: skip


SYNTHETIC_LAYERS = [("foundation", ("pkg", "errors")), ("runtime", ("runtime",)),
                    ("build", ("export", "calibration")), ("benchmarks", ("benchmarks",)), ("cli", ("cli",))]


def test_the_checks_fail_on_real_violations(broken: Path) -> None:
    edges = import_graph(broken)
    problems = upward_imports(edges, SYNTHETIC_LAYERS)
    joined = "\n".join(problems)
    assert "pkg.runtime.run imports pkg.export.build" in joined  # inside a function
    assert "pkg.runtime.backends imports pkg.cli" in joined  # relative import
    assert "pkg.runtime.registry imports pkg.benchmarks.rows" in joined  # a registry string
    assert "'extra' is in no layer" in joined  # a part the table forgot
    assert not any("pkg.runtime imports pkg.errors" in p for p in problems)  # downwards is fine
    assert not any("export.build imports pkg.calibration" in p for p in problems)  # same layer is fine
    assert len([p for p in problems if "must not import" in p]) == 3
    assert part_cycles(edges) == [["calibration", "export"]]


def test_a_clean_package_passes(tmp_path: Path) -> None:
    clean = _write(tmp_path, {"pkg/__init__.py": "", "pkg/errors.py": "", "pkg/cli/__init__.py": "",
                              "pkg/cli/main.py": "from pkg.errors import *\nfrom ..errors import *\n"})
    edges = import_graph(clean)
    assert len(edges) == 2 and upward_imports(edges, SYNTHETIC_LAYERS) == [] and part_cycles(edges) == []
