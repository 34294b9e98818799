"""environment.yml and pyproject.toml install the same thing; pins these machines need hold."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    r = Requirement(req)
    return re.sub(r"[-_.]+", "-", r.name).lower(), str(r.specifier)


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(map(_norm, project["dependencies"]))
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "all":
            wanted |= set(map(_norm, reqs))
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
    have = {_norm(r) for r in pip if r != "-e ."}
    assert have == wanted, f"only in environment.yml: {have - wanted}; only in pyproject: {wanted - have}"


def test_pins_never_ask_for_newer_torch_and_keep_book_1_and_opencv_4():
    deps = dict(map(_norm, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]))
    from packaging.specifiers import SpecifierSet
    assert "2.14.1" in SpecifierSet(deps["torch"]) and "2.15.0" not in SpecifierSet(deps["torch"])
    assert "0.29.1" in SpecifierSet(deps["torchvision"]) and "0.30.0" not in SpecifierSet(deps["torchvision"])
    assert "5.0.0" not in SpecifierSet(deps["opencv-python-headless"])
    book = dict(map(_norm, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                    ["optional-dependencies"]["book"]))
    assert "2.0.0" not in SpecifierSet(book["jupyter-book"]) and "1.0.4" in SpecifierSet(book["jupyter-book"])
