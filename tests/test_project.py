"""Project rules that keep the layout honest: dependency direction, the lock, the two commands."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = {"kfp", "kserve", "mlflow", "kubernetes", "evidently", "optuna", "kubeflow"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_code_imports_no_platform_library():
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_modules(p) & PLATFORM)
        for p in (ROOT / "model_code").rglob("*.py")
        if imported_modules(p) & PLATFORM
    }
    assert offenders == {}


def test_model_code_does_not_import_the_command_line():
    offenders = [str(p) for p in (ROOT / "model_code").rglob("*.py") if "auroraops" in imported_modules(p)]
    assert offenders == []


PACKAGES = ("model_code", "adapters", "serving", "components", "pipelines", "monitoring", "auroraops")
"""The top-level packages, each allowed to import only those before it (docs/architecture.md)."""


def test_top_level_packages_import_only_the_layers_below_them():
    upward = {}
    for k, package in enumerate(PACKAGES):
        above = set(PACKAGES[k + 1:])
        for p in (ROOT / package).rglob("*.py"):
            if imported_modules(p) & above:
                upward[str(p.relative_to(ROOT))] = sorted(imported_modules(p) & above)
    assert upward == {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules `path` imports when it runs (lazy imports included; `if TYPE_CHECKING:` not)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_project_module_imports_itself_back_through_others():
    paths = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = {m: _runtime_imports(p, set(paths)) - {m} for m, p in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    circular = sorted(f"{m} -> {d}" for m, ds in graph.items() for d in ds if reaches(d, m))
    assert circular == []


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_lock_pins_exact_versions_of_everything_installed():
    """The environment is built from the lock alone, so anything unpinned shows up here."""
    pins = lock_pins()
    installed = {
        re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in distributions()
    }
    installed.pop("aurora-mlops")
    unpinned = sorted(set(installed) - set(pins) - {"pip"})
    assert unpinned == []
    different = {n: (v, pins[n]) for n, v in installed.items() if n in pins and pins[n] != v}
    assert different == {}


def test_torch_and_torchvision_are_pinned_together():
    pins = lock_pins()
    assert (pins["torch"], pins["torchvision"], pins["microsoft-aurora"]) == ("2.14.1", "0.29.1", "2.0.1")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pyproject and '"torchvision==0.29.1"' in pyproject


def test_readme_setup_has_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)\s*$", setup, flags=re.M)
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines()
             if l.strip() and not l.startswith("#") and not l.startswith(("set ", "cd "))]
    assert lines == ["make test"]


def test_shipped_samples_carry_their_provenance():
    notice = (ROOT / "data" / "samples" / "README.md").read_text()
    for path in (ROOT / "data" / "samples").rglob("*"):
        if path.is_file() and path.suffix in (".grib", ".grib2", ".nc") or path.suffix == ".zarr":
            assert path.name in notice, path.name


def test_variable_doc_lists_every_catalogued_variable():
    from model_code.variables import VARIABLES

    doc = (ROOT / "docs" / "variables.md").read_text()
    for v in VARIABLES:
        assert f"| `{v.name}` | {v.kind} | `{v.dataset_name}` | {v.units} |" in doc


def test_make_test_stops_naming_the_missing_prerequisites(tmp_path):
    """Without kubectl and PostgreSQL's binaries the suite does not start (and so skips nothing)."""
    (tmp_path / "make").symlink_to(shutil.which("make"))
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "test"], env={"PATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "make test needs on PATH: kubectl initdb pg_ctl" in done.stderr
