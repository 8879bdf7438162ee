"""`make mutate`: mutation testing (mutmut) of the pure modules, each against its own tests.

Each module is mutated in a scratch copy of thumbd/ and tests/ (mutmut writes its mutants/
folder beside the configuration it reads, so the working tree stays clean), and only its own
unit tests run against each mutant: a mutant counts as killed by those tests, not by an
integration test that happens to pass through the module. One line per module:

    mutation score: names 131/135 97.0%

`python -m tests.mutate names manifest` (or `MODULES="names manifest" make mutate`) limits the
run; `-v` also prints each survivor's diff. Not part of CI: a full run takes minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (the module mutated, its unit tests)
MODULES: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "names": ("thumbd/output/names.py", "tests/output/test_names.py"),
    "manifest": ("thumbd/downloads/manifest.py", "tests/downloads/test_manifest.py"),
    "sizing": ("thumbd/render/sizing.py", "tests/render/test_sizing.py"),
    "settle": ("thumbd/intake/settle.py", "tests/intake/test_settle.py"),
    "config": ("thumbd/config.py", ("tests/test_config.py", "tests/test_config_values.py")),
    "writer": ("thumbd/output/writer.py", "tests/output/test_writer.py"),
    "policy": ("thumbd/downloads/policy.py", "tests/downloads/test_policy.py"),
}

# A mutant the tests detect by hanging (the timeout) is caught as surely as one they fail.
CAUGHT = frozenset({"killed", "timeout"})

CONFIG = """\
[tool.mutmut]
source_paths = ["thumbd"]
only_mutate = [{source!r}]
pytest_add_cli_args_test_selection = {tests!r}
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
also_copy = {also!r}
"""

# What some unit tests read besides the code (the documented example configuration).
ALSO = ["etc", "README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutate", description=__doc__)
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(MODULES)} (all)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants at once (2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each survivor")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    for name in args.modules or MODULES:
        print(score(name, args.jobs, args.verbose), flush=True)
    return 0


def score(name: str, jobs: int, verbose: bool) -> str:
    """Mutate one module in a scratch copy; its score line."""
    source, tests = MODULES[name]
    with tempfile.TemporaryDirectory(prefix=f"thumbd-mutate-{name}-") as scratch:
        work = Path(scratch)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "thumbd", work / "thumbd", ignore=ignore)
        shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
        shutil.copytree(ROOT / "etc", work / "etc")
        shutil.copy(ROOT / "README.md", work)
        selection = [tests] if isinstance(tests, str) else list(tests)
        config = CONFIG.format(source=source, tests=selection, also=ALSO)  # TOML takes 'x'
        (work / "pyproject.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the mutants' thumbd
        mutmut = [sys.executable, "-m", "mutmut"]
        run = subprocess.run(
            [*mutmut, "run", "--max-children", str(jobs)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
            raise SystemExit(f"mutate: mutmut failed on {source} (exit {run.returncode})")
        results = subprocess.run(
            [*mutmut, "results", "--all", "true"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        verdicts = dict(
            line.strip().rsplit(": ", 1) for line in results.splitlines() if ": " in line
        )
        survivors = sorted(m for m, v in verdicts.items() if v not in CAUGHT)
        for mutant in survivors:
            print(f"  {verdicts[mutant]}: {mutant}", file=sys.stderr)
            if verbose:
                show = [*mutmut, "show", mutant]
                diff = subprocess.run(show, cwd=work, env=env, capture_output=True, text=True)
                print(diff.stdout, file=sys.stderr)
    total = len(verdicts)
    killed = total - len(survivors)
    percent = 100.0 * killed / total if total else 100.0
    return f"mutation score: {name} {killed}/{total} {percent:.1f}%"


if __name__ == "__main__":
    raise SystemExit(main())
