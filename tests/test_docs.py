"""Every documented command is run, so a renamed setting or flag breaks a test, not a reader.

The commands: every code line (fenced, except ```python blocks, or indented) and every inline code span of
README.md and docs/*.md that starts with `python -m`, `.venv/bin/python -m`, `torchrun`, `./setup.sh`,
`benchmark/gpu_check.sh` or `pytest` (after `VAR=value` assignments; `\\` continuations joined; `&&` parts
taken one by one; an inline span with `...` sketches a command and is not one), and the same lines of each
CLI's `--help` and module docstring. Every `--set key=value` and inline `section.key=value` of those texts is
resolved as a setting too.

They run in a sandbox: a folder holding a copy of the committed `results/proxy` and `results/proxy-decisive`, so
nothing in the repository is written; `runs/proxy` (what the main job writes) is the first for the commands that
read a finished plan (report, power, variance, fidelity), and `/tmp/...` paths go under the sandbox. How each is
run:
- for real, in this process: `benchmark.arch`, `.power`, `.variance` and `.report` (seconds, no training) and
  the first plain smoke-preset `benchmark.run` (with `--set threads=1`);
- every other command is checked without its work, for the reason NOT_RUN_HERE gives: its flags are parsed by
  the CLI's own parser and every setting it names (preset, `--method`, `--space`, `--seeds`, each `--set`, the
  launcher's flags) is resolved as the CLI resolves it, for benchmark.run by `benchmark.run.plan_tasks`, which
  also refuses a run folder made with other settings. `benchmark.perf` runs with its measurements replaced by
  no-ops. The slow tests run the smoke-scale ones for real and collect the pytest commands.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_example_method import registered_example
from torch.distributed.run import get_args_parser as torchrun_parser

import benchmark.run as run_cli
from benchmark import fidelity, groundtruth, perf, slurm, teacher
from benchmark.harness import parse_seeds
from benchmark.preset import list_presets, load_preset
from ennas.core.config import parse_overrides, resolve

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PREFIXES = ("python -m ", ".venv/bin/python -m ", "torchrun ", "./setup.sh", "benchmark/gpu_check.sh", "pytest")
CLIS = ("run", "report", "arch", "perf", "power", "variance", "teacher", "fidelity", "groundtruth", "gpu_check")
REAL_HERE = ("arch", "power", "variance", "report")  # no training: seconds each, run for real in the default run
READ_A_PLAN = ("report", "power", "variance", "fidelity")  # their runs/proxy is the committed results' copy
ELSEWHERE = ("/data/", "/path/", "/shared/")  # data and cluster folders of another machine

# Why a documented command is checked without its work (every command not run for real has one of these).
NOT_RUN_HERE = {
    "setup": "installs Debian's dataset and a virtualenv: tests/test_setup.py runs setup.sh in a sandbox with fakes",
    "torchrun": "several processes, as written on the GPUs of one or more nodes (tests/test_distributed.py and "
    "test_multinode.py run torchrun on gloo)",
    "slurm": "submits to SLURM: tests/test_slurm.py submits docs/cluster.md's commands to a fake SLURM",
    "local": "SLURM's twin on this machine: tests/test_slurm.py runs docs/cluster.md's local twins (slow)",
    "gpu": "needs a CUDA GPU; its CPU form (--device cpu --tiny) is run by tests/test_gpu_check.py",
    "elsewhere": "reads a dataset or cluster folder of another machine (/data, /path, /shared)",
    "long": "trains or measures for minutes to hours (proxy or imagenet preset, the DNA teacher, the ground truth, "
    "benchmark.perf)",
    "weights": "needs a run's supernet weights, which committed runs do not keep",
    "slow": "seconds to minutes of smoke-scale work: run for real by the slow tests",
    "pytest": "runs a test suite: its markers and paths are checked here; the slow tests collect it",
}


@dataclass(frozen=True)
class Command:
    """One documented command: where it is first written and its text (continuation lines joined)."""

    where: str
    text: str

    def parts(self) -> list[tuple[dict, list[str]]]:
        """The `&&`-separated commands as (environment assignments, argv)."""
        out, env, argv = [], {}, []
        for token in [*shlex.split(self.text, comments=True), "&&"]:
            if token == "&&":
                out.append((env, argv))
                env, argv = {}, []
            elif not argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", token):
                key, _, value = token.partition("=")
                env[key] = value
            else:
                argv.append(token)
        return out


def is_command(line: str) -> bool:
    """Whether a code line is a command (after any VAR=value assignments)."""
    return re.sub(r"^([A-Z_][A-Z0-9_]*=\S+\s+)+", "", line.strip()).startswith(PREFIXES)


def code_lines(text: str) -> list[str]:
    """Commands among the text's code lines: fenced (not ```python) and indented, continuations joined."""
    found, fence, pending = [], None, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = None if fence is not None else line.strip()[3:]
            continue
        if (fence is not None and fence != "python") or (fence is None and line.startswith("    ")):
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if is_command(pending):
                found.append(pending)
        pending = ""
    return found


def inline_spans(text: str) -> list[str]:
    """Commands in inline code spans outside fences (a span with `...` sketches a command and is left out)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [s for s in re.findall(r"`([^`\n]+)`", prose) if is_command(s) and "..." not in s]


def help_text(name: str) -> str:
    """What `python -m benchmark.NAME --help` prints, and the module's docstring (where its examples are)."""
    module = importlib.import_module(f"benchmark.{name}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main(["--help"])
    return out.getvalue() + "\n" + (module.__doc__ or "")


def documented() -> list[Command]:
    """Every documented command once (the same argv twice is one command), at its first place."""
    commands: dict[str, Command] = {}
    texts = [(str(p.relative_to(REPO)), p.read_text()) for p in PAGES]
    texts += [(f"benchmark.{name} --help", re.sub(r"(?m)^[ \t]*", "    ", help_text(name))) for name in CLIS]
    for where, text in texts:
        for line in code_lines(text) + inline_spans(text):
            command = Command(where, line)
            commands.setdefault(repr(command.parts()), command)
    return list(commands.values())


COMMANDS = documented()


# --- where and how they run ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder with a copy of the committed results (both references), and SLURM's sbatch and srun (they are
    never called)."""
    root = tmp_path_factory.mktemp("docs")
    for folder in ("proxy", "proxy-decisive"):
        shutil.copytree(REPO / "results" / folder, root / "results" / folder)
    (root / "bin").mkdir()
    for tool in ("sbatch", "srun"):
        (root / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (root / "bin" / tool).chmod(0o755)
    return root


@pytest.fixture
def here(sandbox, monkeypatch):
    """Commands run from the sandbox, with its SLURM tools on PATH (`slurm.settings_from` looks for them)."""
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("PATH", f"{sandbox / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return sandbox


def module_of(argv: list[str]) -> tuple[str, list[str]]:
    """('benchmark.run', args) for `python -m benchmark.run args`; ('pytest', args) for pytest either way."""
    if argv[0] == "pytest":
        return "pytest", argv[1:]
    assert argv[0] in ("python", ".venv/bin/python") and argv[1] == "-m", argv
    return argv[2], argv[3:]


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` in args, if given."""
    return args[args.index(name) + 1] if name in args else None


def why_not_run(argv: list[str]) -> str | None:
    """None for a command the default run runs for real, else its NOT_RUN_HERE key."""
    if argv[0] in ("./setup.sh", "torchrun"):
        return {"./setup.sh": "setup", "torchrun": "torchrun"}[argv[0]]
    if argv[0] == "benchmark/gpu_check.sh":
        return "gpu"
    module, args = module_of(argv)
    name = module.removeprefix("benchmark.")
    if module == "pytest":
        return "pytest"
    if name == "run" and flag(args, "--launcher") in ("slurm", "local"):
        return flag(args, "--launcher")
    if any(a.startswith(ELSEWHERE) for a in args):
        return "elsewhere"
    if name in ("run", "teacher", "groundtruth", "perf"):
        return "slow" if flag(args, "--preset") == "smoke" else "long"
    if name == "gpu_check":
        return "gpu"
    if name == "fidelity":
        return "slow" if "--from-scores" in args else "weights"
    assert name in REAL_HERE, f"a documented command of no known CLI: {shlex.join(argv)}"
    return None


def first_smoke_run() -> Command:
    """The one documented smoke run the default run runs for real: the first plain one."""
    for command in COMMANDS:
        (_, argv), *rest = command.parts()
        if not rest and argv[0] != "torchrun" and why_not_run(argv) == "slow" and "benchmark.run" in argv:
            if not {"--jobs", "--data", "--set", "--launcher"} & set(argv):
                return command
    raise AssertionError("no plain smoke run of benchmark.run is documented")


def example_if_named(text: str):
    """docs/adding-a-method.md's example method registered while a text names it, else nothing."""
    return registered_example() if re.search(r"fair-spos|\bfair\.", text) else contextlib.nullcontext()


def arguments(argv: list[str], root: Path) -> tuple[str, list[str]]:
    """The module and its arguments as they run in the sandbox: `/tmp/...` under it, runs/proxy the committed
    copy for the commands that read a finished plan, shell globs expanded."""
    module, args = module_of(argv)
    moved = []
    for a in args:
        if a.startswith("/tmp/"):
            a = str(root / a.lstrip("/"))
        elif module.removeprefix("benchmark.") in READ_A_PLAN and a.startswith("runs/proxy"):
            a = "results/proxy" + a.removeprefix("runs/proxy")
        moved += sorted(str(p) for p in Path().glob(a)) if "*" in a else [a]
    return module, moved


def call(main, argv: list[str]) -> tuple[int, str]:
    """A CLI's main in this process: exit status and what it printed (stdout and stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = main(argv)
        except SystemExit as stop:  # argparse: a bad flag
            rc = stop.code
    return rc, out.getvalue()


class Parsed(BaseException):
    """Raised with the namespace once a CLI's own parser has accepted the arguments (no handler catches it)."""


def parsed_by(main, args: list[str]) -> argparse.Namespace:
    """The CLI's arguments parsed by its own parser (every flag known, every value of its type), and no work."""
    original = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", parse)
        try:
            rc, out = call(main, args)
        except Parsed as done:
            return done.args[0]
    raise AssertionError(f"{shlex.join(args)}: not parsed (exit status {rc}): {out[-2000:]}")


def check_run(args: list[str]) -> None:
    """benchmark.run without its work: flags parsed, launcher settings checked, every planned run resolved."""
    parsed = run_cli.parse_args(args)
    slurm.settings_from(parsed, load_preset(parsed.preset).get("slurm", {}))
    with pytest.MonkeyPatch.context() as mp:  # a documented data folder (ImageNet on a cluster) is not here
        mp.setattr(run_cli, "check_data", lambda cfgs: None)
        tasks, _, _ = run_cli.plan_tasks(parsed)
    assert tasks


def check_without_work(argv: list[str], root: Path) -> None:
    """Parse and resolve the command as its CLI does, without training or measuring."""
    if argv[0] == "./setup.sh":
        assert argv == ["./setup.sh"] and os.access(REPO / "setup.sh", os.X_OK)
        return
    if argv[0] == "torchrun":  # torchrun's own parser, then the module's arguments
        opts = torchrun_parser().parse_args(argv[1:])
        assert opts.module and opts.training_script == "benchmark.run", argv
        check_run(arguments(["python", "-m", "benchmark.run", *opts.training_script_args], root)[1])
        return
    if argv[0] == "benchmark/gpu_check.sh":
        assert '-m benchmark.gpu_check "$@"' in (REPO / argv[0]).read_text()
        argv = ["python", "-m", "benchmark.gpu_check", *argv[1:]]
    module, args = arguments(argv, root)
    name = module.removeprefix("benchmark.")
    if module == "pytest":
        markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
        marker = flag(args, "-m")
        assert marker is None or any(m.startswith(f"{marker}:") for m in markers), f"marker {marker} not registered"
        assert all((REPO / a).exists() for a in args if not a.startswith("-") and a != marker), args
    elif name == "run":
        check_run(args)
    elif name == "teacher":
        parsed = teacher.parse_args(args)
        teacher.output_dir(parsed, teacher.teacher_config(parsed))
    elif name == "groundtruth":  # resolved as make_groundtruth resolves it
        parsed = groundtruth.parse_args(args)
        resolve(load_preset(parsed.preset), parse_overrides(parsed.overrides), space=parsed.space, seed=0)
        if parsed.band:
            groundtruth.parse_band(parsed.band)
    elif name == "fidelity":
        parsed = fidelity.parse_args(args)
        if not any(str(d).startswith(ELSEWHERE) for d in parsed.run_dir):
            fidelity._check(parsed.run_dir, parsed.groundtruth, parsed.from_scores)
    elif name == "perf":  # the real CLI with every measurement a no-op
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(perf, "SECTIONS", {key: (lambda quick: {}) for key in perf.SECTIONS})
            rc, out = call(perf.main, args)
        assert rc == 0, out
    else:  # gpu_check, and the cheap CLIs where their folder is another machine's
        parsed_by(importlib.import_module(module).main, args)


def run_for_real(argv: list[str], root: Path, cwd: Path) -> str:
    """The command itself, in this process, from `cwd`; its output. Training gets one thread."""
    module, args = arguments(argv, root)
    if module == "benchmark.run":
        args = [*args, "--set", "threads=1"]
    elif module == "benchmark.teacher":
        args = [*args, "--threads", "1"]
    with contextlib.chdir(cwd):
        rc, out = call(importlib.import_module(module).main, args)
    assert rc == 0, f"{shlex.join(argv)} exited {rc}:\n{out[-3000:]}"
    return out


def own_folder(root: Path, tmp_path: Path) -> Path:
    """A fresh working folder for one training command (its runs/ of its own), the results copy beside it."""
    (tmp_path / "results").symlink_to(root / "results")
    return tmp_path


# --- the tests ----------------------------------------------------------------------------------------------------
def test_the_pages_and_help_texts_hold_the_commands():
    where = {c.where for c in COMMANDS}
    assert {"README.md", "docs/running.md", "docs/cluster.md", "benchmark.run --help"} <= where, sorted(where)
    texts = [c.text for c in COMMANDS]
    assert "./setup.sh && .venv/bin/python -m benchmark.run --method all" in texts
    assert "./setup.sh && .venv/bin/python -m pytest -q" in texts
    assert first_smoke_run().where == "README.md"


def test_every_command_not_run_here_has_its_reason():
    kinds: dict = {}
    for command in COMMANDS:
        for _, argv in command.parts():
            kinds.setdefault(why_not_run(argv), []).append(shlex.join(argv))
    assert set(kinds) - {None} <= set(NOT_RUN_HERE) and kinds[None] and kinds["slow"]
    for kind, argvs in kinds.items():  # what is checked how (`pytest -s` shows it)
        print(f"{kind or 'run for real'}: {NOT_RUN_HERE.get(kind, 'in the default run')}", *argvs, sep="\n  ")


def test_the_cluster_page_is_read_as_test_slurm_reads_it():
    """docs/cluster.md's commands are the ones tests/test_slurm.py submits and runs: checked here without their
    work, submitted to a fake SLURM and run on the local executor there."""
    from test_slurm import documented_commands

    ours = [shlex.split(c.text)[3:] for c in COMMANDS if c.where == "docs/cluster.md" and "--launcher" in c.text]
    assert ours == documented_commands()


def settings_in(text: str) -> list[str]:
    """Every `--set key=value` of a text, and every inline `section.key=value` span (as prose names settings)."""
    found = re.findall(r"--set[ =]([a-z][\w.]*=[^\s`'\")]+)", text)
    return [s for s in found if s != "key=value"] + re.findall(r"`([a-z]\w*\.[a-z]\w*=[^`\s]+)`", text)


def test_every_setting_the_pages_and_help_texts_name_is_a_setting():
    texts = {str(p.relative_to(REPO)): p.read_text() for p in PAGES}
    texts |= {f"benchmark.{name} --help": help_text(name) for name in CLIS}
    checked = 0
    for where, text in texts.items():
        for item in settings_in(text):
            errors = []
            with example_if_named(item):
                for preset in list_presets():  # a setting of some preset (data.decode=device: ImageNet's)
                    try:
                        resolve(load_preset(preset), parse_overrides([item]))
                    except ValueError as err:
                        errors.append(f"{preset}: {err}")
            assert len(errors) < len(list_presets()), f"{where}: {item}: {errors}"
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}: {c.text[:70]}")
def test_documented_command(command, here, tmp_path):
    with example_if_named(command.text):
        for env, argv in command.parts():
            for key, value in env.items():  # the two variables the pages set: tests/test_reproduction.py's
                assert key in ("ENNAS_REPRO_DIR", "ENNAS_REPRO_SEEDS"), (key, value)
                assert (REPO / value).is_dir() if key == "ENNAS_REPRO_DIR" else parse_seeds(value), (key, value)
            if command == first_smoke_run():
                assert "runs/smoke" in run_for_real(argv, here, own_folder(here, tmp_path))
            elif why_not_run(argv) is None:
                assert run_for_real(argv, here, here).strip()
            else:
                check_without_work(argv, here)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if c != first_smoke_run() and {"slow", "pytest"} & {why_not_run(a) for _, a in c.parts()}],
    ids=lambda c: c.text[:80],
)
def test_documented_command_for_real(command, here, tmp_path):
    """The smoke-scale commands the default run only checks, run for real; the pytest commands collected."""
    with example_if_named(command.text):
        for env, argv in command.parts():
            if why_not_run(argv) == "slow":
                run_for_real(argv, here, own_folder(here, tmp_path))
            elif why_not_run(argv) == "pytest":
                _, args = module_of(argv)
                cmd = [sys.executable, "-m", "pytest", *args, "--collect-only", "-q"]
                proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
                assert proc.returncode == 0 and " collected" in proc.stdout, proc.stdout[-2000:]


# --- the pages themselves -----------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_resolves():
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"(?m)^#+ (.+)$", file.read_text())
                assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"


def test_the_codes_citations_of_the_design_name_its_sections():
    sections = set(re.findall(r"(?m)^## (\d+)\. ", (REPO / "docs" / "design.md").read_text()))
    cited = {}
    for folder in ("spaces", "ennas", "baselines", "benchmark"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            assert "DESIGN.md" not in text and "DESIGN " not in text, f"{path}: cites the old plan"
            for first, last in re.findall(r"docs/design\.md §(\d+)(?:-(\d+))?", text):
                cited.setdefault(first, path)
                if last:
                    cited.setdefault(last, path)
    assert cited and set(cited) <= sections, {n: str(p) for n, p in cited.items() if n not in sections}


def test_the_front_page_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_the_front_page_answer_is_the_reference_reports():
    """The README's answer table is the decisive run's answer.md as benchmark.report wrote it: rebuilding the
    report after new runs and not the front page fails here."""
    table = (REPO / "results" / "proxy-decisive" / "answer.md").read_text()
    assert table.count("\n") > 3 and table in (REPO / "README.md").read_text()


RESULTS_SECTIONS = {  # docs/results.md's sections and the committed report each one's tables are copied from
    "## The decisive run": "proxy-decisive",
    "## History: with weight sharing": "proxy",
    "## Without weight sharing": "proxy/sharing-none",
}


@pytest.mark.parametrize("heading", RESULTS_SECTIONS)
def test_the_results_page_tables_are_their_reports(heading):
    """docs/results.md's Table 1 rows are their REPORT.md's rows, and each claim row gives the report's interval,
    verdict, MDE and seeds for Δ: rebuilding a report and not this page fails here."""
    page = (REPO / "docs" / "results.md").read_text()
    section = page[page.index(heading) :]
    section = section[: section.index("\n## ", 1)]
    report = (REPO / "results" / RESULTS_SECTIONS[heading] / "REPORT.md").read_text()
    claims = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 11:  # a claims table's row: id, space, P, P scaled, Δ, ours, interval, n, verdict, MDE, n
            claims.setdefault(cells[0], cells)
    table1 = [line for line in section.splitlines() if line.startswith("| s1 |")]
    assert len(table1) == 6 and all(line in report for line in table1), heading
    checked = 0
    for line in section.splitlines():
        found = re.match(r"\| `(\w+)`( \(isolated timings[^)]*\))? \|", line)
        if found and "runs' own times" not in line:  # that cost row is the report's Cost section, not its claims
            cells = [c.strip() for c in line.strip("|").split("|")]
            row = claims[found.group(1)]
            assert cells[3:7] == [f"{row[5]} {row[6]}", row[8], row[9], row[10]], line
            checked += 1
    assert checked == 14, heading
