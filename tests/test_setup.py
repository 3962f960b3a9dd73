"""The install: constraints.txt pins exactly what pyproject.toml pulls in, as installed; setup.sh's checks, routes."""

import ast
import importlib.metadata
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"spaces", "ennas", "baselines", "benchmark"} | {p.stem for p in (REPO / "tests").glob("*.py")}
NOT_FROZEN = {"pip", "setuptools", "wheel"}  # pip freeze leaves these out, so the lock does too
DATASET = "/usr/share/datasets/fashion-mnist"
IDX_FILES = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
BASH = shutil.which("bash")
PY_VERSION = 'import sys; print("%d.%d" % sys.version_info[:2])'  # setup.sh's version query, as logged
PIP = "python -m pip install -q --disable-pip-version-check -c constraints.txt -e .[test]"  # its install, as logged


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and its test extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line that is not a comment is `name==version`."""
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and name.strip() == name and version.strip() == version, f"not name==version: {line!r}"
            found[canonicalize_name(name)] = version
    return found


def closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of everything `requirements` pull in, by the installed metadata, markers evaluated here."""
    seen, todo, missing = set(), list(requirements), []
    while todo:
        req = todo.pop()
        for extra in {"", *req.extras}:
            key = (canonicalize_name(req.name), extra)
            if key in seen:
                continue
            seen.add(key)
            try:
                lines = importlib.metadata.requires(req.name) or []
            except importlib.metadata.PackageNotFoundError:
                missing.append(str(req))
                continue
            for dep in map(Requirement, lines):
                marker_holds = dep.marker.evaluate({"extra": extra}) if dep.marker else extra == ""
                if marker_holds:
                    todo.append(dep)
    assert not missing, f"required but not installed: {sorted(missing)}"
    return {name for name, _ in seen}


def test_every_declared_dependency_is_pinned():
    locked = pins()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(locked[name], prereleases=True), f"{req} vs constraints.txt {locked[name]}"


def test_pins_match_the_installed_versions():
    stale = {}
    for name, version in pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            stale[name] = (version, installed)
    assert not stale, f"constraints.txt is stale, {{name: (pinned, installed)}}: {stale}"


def test_pins_are_exactly_what_the_project_pulls_in():
    needed, locked = closure(declared()) - NOT_FROZEN, set(pins())
    assert not needed - locked, f"pulled in but not pinned: {sorted(needed - locked)}"
    assert not locked - needed, f"pinned but no dependency needs it: {sorted(locked - needed)}"


def test_every_imported_package_is_declared():
    owners = importlib.metadata.packages_distributions()
    names = {canonicalize_name(r.name) for r in declared()}
    undeclared = {}
    for folder in ("spaces", "ennas", "baselines", "benchmark", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for top in {m.partition(".")[0] for m in modules} - FIRST_PARTY - sys.stdlib_module_names:
                    if not {canonicalize_name(d) for d in owners.get(top, [top])} & names:
                        undeclared.setdefault(top, str(path.relative_to(REPO)))
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"


# setup.sh runs in a sandbox: a copy in an empty folder, its dataset folder moved there (absent unless a test makes
# it), PATH holding only dirname, id and the fakes a test adds. Fake pythons and apt-get log each call and do
# nothing else, so no test installs anything or touches the network; a fake python's `-m venv D` copies itself
# to D/bin/python, so the pip call is logged too.


@pytest.fixture
def sandbox(tmp_path):
    script = (REPO / "setup.sh").read_text()
    assert script.count(DATASET) == 1, "setup.sh names the dataset folder once (these tests move it)"
    box = SimpleNamespace(repo=tmp_path / "repo", bin=tmp_path / "bin", data=tmp_path / "fashion-mnist")
    box.log = tmp_path / "calls.log"
    box.repo.mkdir()
    box.bin.mkdir()
    (box.repo / "setup.sh").write_text(script.replace(DATASET, str(box.data)))
    for tool in ("dirname", "id"):
        (box.bin / tool).symlink_to(shutil.which(tool))
    return box


def fake(path: Path, body: str, log: Path) -> Path:
    """An executable shell script at `path` that logs `$0 $*` to `log`, then runs `body`."""
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> {shlex.quote(str(log))}\n{body}\n')
    path.chmod(0o755)
    return path


def fake_python(path: Path, version: str, log: Path) -> Path:
    """A python that reports `version` to `-c ...` and makes a venv of itself for `-m venv D`."""
    mkdir, cp = shutil.which("mkdir"), shutil.which("cp")
    venv = f'[ "$2" != venv ] || {{ {mkdir} -p "$3/bin" && {cp} "$0" "$3/bin/python"; }}'
    body = f'case "$1" in\n  -c) echo {version} ;;\n  -m) {venv} ;;\nesac'
    return fake(path, body, log)


def fake_apt(box) -> None:
    """apt-get that only logs, and sudo that runs its command (setup.sh uses sudo when not root)."""
    fake(box.bin / "apt-get", "", box.log)
    fake(box.bin / "sudo", 'exec "$@"', box.log)


def setup_sh(box, **env) -> subprocess.CompletedProcess:
    env = {"PATH": str(box.bin), "HOME": str(box.repo.parent), **env}
    return subprocess.run([BASH, "setup.sh"], cwd=box.repo, env=env, capture_output=True, text=True, timeout=60)


def calls(box) -> list[str]:
    """The logged calls, each with its program's name instead of its path."""
    lines = box.log.read_text().splitlines() if box.log.exists() else []
    return [f"{Path(prog).name} {args}" for prog, _, args in (line.partition(" ") for line in lines)]


@pytest.mark.parametrize("chosen", ["PYTHON", "python3"])
def test_setup_refuses_an_old_python_before_installing_anything(sandbox, chosen):
    fake_apt(sandbox)  # and no dataset: were the check after the apt step, apt-get would be called
    if chosen == "PYTHON":  # $PYTHON wins over a python3.11 on PATH
        fake_python(sandbox.bin / "python3.11", "3.11", sandbox.log)
        env = {"PYTHON": str(fake_python(sandbox.repo.parent / "py38", "3.8", sandbox.log))}
    else:  # no $PYTHON, no python3.11: python3
        fake_python(sandbox.bin / "python3", "3.8", sandbox.log)
        env = {}
    proc = setup_sh(sandbox, **env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Python >= 3.11" in proc.stderr and "Python 3.8" in proc.stderr
    assert "install python3.11 or set PYTHON=/path/to/python3.11" in proc.stderr
    assert calls(sandbox) == [f"{'py38' if chosen == 'PYTHON' else 'python3'} -c {PY_VERSION}"]
    assert not (sandbox.repo / ".venv").exists()


@pytest.mark.parametrize(
    ("env", "used"),
    [({}, "python3.11"), ({"PYTHON": "py312"}, "py312")],
    ids=["python3.11-before-python3", "PYTHON-first"],
)
def test_setup_without_apt_prints_the_data_hint_and_installs_with_the_lock(sandbox, env, used):
    fake_python(sandbox.bin / "python3.11", "3.11", sandbox.log)
    fake_python(sandbox.bin / "python3", "3.8", sandbox.log)
    if env:
        env = {"PYTHON": str(fake_python(sandbox.repo.parent / "py312", "3.12", sandbox.log))}
    proc = setup_sh(sandbox, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hint = proc.stderr.splitlines()
    assert len(hint) == 1 and "not installed" in hint[0] and "--data DIR" in hint[0], proc.stderr
    assert all(name in hint[0] for name in IDX_FILES)
    assert calls(sandbox) == [f"{used} -c {PY_VERSION}", f"{used} -m venv .venv", PIP]


def test_setup_with_apt_installs_the_dataset(sandbox):
    fake_apt(sandbox)
    fake_python(sandbox.bin / "python3.11", "3.11", sandbox.log)
    proc = setup_sh(sandbox)
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    apt = [c for c in calls(sandbox) if c.startswith("apt-get")]
    assert apt == ["apt-get update -qq", "apt-get install -y -qq dataset-fashion-mnist"]


def test_setup_second_run_only_checks(sandbox):
    fake_apt(sandbox)
    fake_python(sandbox.bin / "python3.11", "3.11", sandbox.log)
    sandbox.data.mkdir()
    (sandbox.data / "train-images-idx3-ubyte.gz").touch()  # the dataset is installed
    for _ in range(2):
        proc = setup_sh(sandbox)
        assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    check = f"python3.11 -c {PY_VERSION}"
    assert calls(sandbox) == [check, "python3.11 -m venv .venv", PIP, check, PIP]
