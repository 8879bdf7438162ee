"""The command line as a user types it: the real `thumbd` as a subprocess, on real folders.

Which configuration a command uses (-c before or after the command, THUMBD_CONFIG, the default
files, none), what check-config checks and prints, the one-line summaries of retry and redo,
and why `thumbd once` exits 1. Also what `make run` installs and that the README's commands are
ones thumbd takes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Daemon, _env, thumbd
from tests.images import make_garbage, make_jpeg
from tests.integration.test_robustness import as_ordinary_user
from thumbd.cli import build_parser
from thumbd.commands import configfile
from thumbd.config import load_config
from thumbd.text import plural

NONE_FOUND = (
    "thumbd: no configuration: give -c FILE, set THUMBD_CONFIG, or create "
    "/etc/thumbd/thumbd.toml or ./thumbd.toml"
)


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`thumbd ARGS` in `cwd`, with THUMBD_CONFIG only when `env` sets it: whatever the shell
    that runs the tests has set must not choose the configuration."""
    environ = _env()
    environ.pop(configfile.ENV, None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "thumbd", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def site(folder: Path, images: int) -> Path:
    """A configuration in `folder` whose incoming/ holds `images` pending JPEGs."""
    (folder / "incoming").mkdir(parents=True)
    for i in range(images):
        make_jpeg(folder / "incoming" / f"{i}.jpg", (64, 48))
    config = folder / "thumbd.toml"
    config.write_text("[resize]\nworkers = 1\n")
    return config


def pending(r: subprocess.CompletedProcess[str]) -> int:
    assert r.returncode == 0, r.stdout + r.stderr
    found = re.search(r"^pending: (\d+)$", r.stdout, re.M)
    assert found, r.stdout
    return int(found[1])


# -- which configuration ----------------------------------------------------------------------


def test_config_goes_before_or_after_the_command(tmp_path: Path) -> None:
    config = site(tmp_path / "site", 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert pending(cli("-c", str(config), "status", cwd=elsewhere)) == 2
    assert pending(cli("status", "-c", str(config), cwd=elsewhere)) == 2
    assert pending(cli("--config", str(config), "status", cwd=elsewhere)) == 2
    r = cli("--config", str(config), "status", "--json", cwd=elsewhere)
    assert json.loads(r.stdout)["pending"] == 2
    for args in (["-c", str(config), "check-config"], ["check-config", "-c", str(config)]):
        r = cli(*args, cwd=elsewhere)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == f"# configuration: {config} (-c)"
    r = cli("-c", str(config), "retry", "--all", cwd=elsewhere)
    assert r.returncode == 0 and "no state database yet" in r.stderr
    assert not (elsewhere / ".thumbd").exists()


def test_thumbd_config_names_the_file_and_c_comes_first(tmp_path: Path) -> None:
    config = site(tmp_path / "site", 2)
    other = site(tmp_path / "other", 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"THUMBD_CONFIG": str(config)}
    assert pending(cli("status", cwd=elsewhere, env=env)) == 2
    r = cli("check-config", cwd=elsewhere, env=env)
    assert r.stdout.splitlines()[0] == f"# configuration: {config} (from THUMBD_CONFIG)"
    assert pending(cli("status", "-c", str(other), cwd=elsewhere, env=env)) == 1
    missing = tmp_path / "nope.toml"
    r = cli("status", cwd=elsewhere, env={"THUMBD_CONFIG": str(missing)})
    assert r.returncode == 2
    assert r.stderr == (
        f"thumbd: configuration error (THUMBD_CONFIG): {missing}: no such configuration file\n"
    )


def test_without_c_or_thumbd_config_the_defaults_come_in_order(tmp_path: Path) -> None:
    """No file, then ./thumbd.toml, then /etc/thumbd/thumbd.toml before it. Everything that
    depends on what /etc holds is in this one test, so that no other runs while it makes
    /etc/thumbd (as root, and only where there is none)."""
    if configfile.SYSTEM.exists():
        pytest.skip(reason=f"{configfile.SYSTEM} exists here: it is the default for everything")
    cwd = tmp_path / "work"
    (cwd / "incoming").mkdir(parents=True)
    make_jpeg(cwd / "incoming" / "a.jpg", (64, 48))

    # No file at all: the commands about a daemon's state refuse, and make nothing here.
    for args in (["status"], ["retry", "--all"], ["redo", "--all"], ["stop"], ["start"]):
        r = cli(*args, cwd=cwd, env={"THUMBD_CONFIG": ""})  # empty: as if unset
        assert (r.returncode, r.stdout, r.stderr) == (2, "", NONE_FOUND + "\n"), args
    assert not (cwd / ".thumbd").exists()
    # ... while run, once and check-config work on the built-in defaults, and say so.
    r = cli("check-config", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"# configuration: built-in defaults, paths relative to {cwd} ")
    r = cli("once", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert f"configuration: built-in defaults, paths relative to {cwd} " in r.stderr
    assert (cwd / "outgoing" / "a_200.jpg").exists()

    # ./thumbd.toml
    (cwd / "pics").mkdir()
    make_jpeg(cwd / "pics" / "b.jpg", (64, 48))
    make_jpeg(cwd / "pics" / "c.jpg", (64, 48))
    (cwd / "thumbd.toml").write_text('[paths]\nincoming = "pics"\n')
    assert pending(cli("status", cwd=cwd)) == 2
    r = cli("check-config", cwd=cwd)
    assert r.stdout.splitlines()[0] == f"# configuration: {cwd / 'thumbd.toml'} (the default)"

    # /etc/thumbd/thumbd.toml comes before it.
    if os.geteuid() != 0 or configfile.SYSTEM.parent.exists():
        return
    system = site(tmp_path / "srv", 3)
    configfile.SYSTEM.parent.mkdir()
    try:
        configfile.SYSTEM.write_text(f'[paths]\nincoming = "{system.parent / "incoming"}"\n')
        assert pending(cli("status", cwd=cwd)) == 3
        r = cli("check-config", cwd=cwd)
        assert r.stdout.splitlines()[0] == f"# configuration: {configfile.SYSTEM} (the default)"
        assert pending(cli("status", cwd=cwd, env={"THUMBD_CONFIG": str(cwd / "thumbd.toml")})) == 2
    finally:
        shutil.rmtree(configfile.SYSTEM.parent)


# -- check-config -----------------------------------------------------------------------------


def test_check_config_names_each_folder_it_cannot_use(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    (tmp_path / "a-file").write_text("")
    (tmp_path / "logs").mkdir()
    config.write_text(
        '[paths]\nincoming = "in"\noutgoing = "a-file/out"\nstate = "a-file"\n'
        '[log]\nfile = "logs"\n'
    )
    r = thumbd("check-config", "-c", str(config))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"thumbd: configuration error: {config}: [paths] incoming: {tmp_path / 'in'} does not "
        "exist",
        f"thumbd: configuration error: {config}: [paths] outgoing: {tmp_path / 'a-file/out'} "
        f"cannot be made: {tmp_path / 'a-file'} is not a folder",
        f"thumbd: configuration error: {config}: [paths] state: {tmp_path / 'a-file'} is not a "
        "folder",
        f"thumbd: configuration error: {config}: [log] file: {tmp_path / 'logs'} is a folder",
    ]


def test_check_config_names_folders_it_may_not_read_or_write(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[paths]\nincoming = "in"\noutgoing = "out"\nstate = "locked/state"\n')
    for name in ("in", "out", "locked"):
        (tmp_path / name).mkdir()
    (tmp_path / "in").chmod(0o300)
    (tmp_path / "out").chmod(0o555)
    (tmp_path / "locked").chmod(0o555)
    try:
        r = as_ordinary_user("check-config", "-c", str(config))
    finally:
        for name in ("in", "out", "locked"):
            (tmp_path / name).chmod(0o755)
    assert r.returncode == 2, r.stdout
    assert r.stderr.splitlines() == [
        f"thumbd: configuration error: {config}: [paths] incoming: {tmp_path / 'in'} is not "
        "readable",
        f"thumbd: configuration error: {config}: [paths] outgoing: {tmp_path / 'out'} is not "
        "writable",
        f"thumbd: configuration error: {config}: [paths] state: {tmp_path / 'locked/state'} "
        f"cannot be made: {tmp_path / 'locked'} is not writable",
    ]
    r = as_ordinary_user("check-config", "-c", str(config))  # all is well now
    assert r.returncode == 0, r.stderr


SIZE = '\n[[thumbnails.size]]\nname = "x"\nwidth = 10\n'


@pytest.mark.parametrize("sizes", ["", '[[thumbnails.size]]\nname = "card"\nwidth = 40\n'])
def test_what_check_config_prints_loads_with_a_size_appended(tmp_path: Path, sizes: str) -> None:
    (tmp_path / "incoming").mkdir()
    config = tmp_path / "t.toml"
    config.write_text(f'[log]\nlevel = "WARNING"\nformat = "Json"\n{sizes}')
    r = thumbd("check-config", "-c", str(config))
    assert r.returncode == 0, r.stderr
    assert 'level = "warning"' in r.stdout and 'format = "json"' in r.stdout
    printed = tmp_path / "printed.toml"
    printed.write_text(r.stdout + SIZE)
    loaded = load_config(printed)
    assert [s.name for s in loaded.thumbnails.size] == (["card"] if sizes else []) + ["x"]
    assert loaded.log.level == "warning"


def test_a_misspelt_key_gets_the_closest_one(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("[thumbnails]\nwidht = [100]\n")
    r = thumbd("check-config", "-c", str(config))
    assert r.returncode == 2
    assert "unknown key [thumbnails] widht (did you mean [thumbnails] widths?)" in r.stderr


# -- messages -----------------------------------------------------------------------------------


def test_retry_and_redo_print_one_line_and_once_says_why_it_exits_1(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    for name in ("a.jpg", "b.jpg"):
        make_jpeg(d.incoming / name, (64, 48))
    make_garbage(d.incoming / "bad.jpg")
    c = str(d.config)
    hint = f"thumbd status -c {c} lists them; thumbd retry -c {c} --all tries them again"

    r = thumbd("once", "-c", c)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"thumbd: not done: 1 file failed in this run: {hint}"
    r = thumbd("once", "-c", c)  # bad.jpg did not change: not tried, still failed
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"thumbd: not done: 1 file failed earlier: {hint}"

    r = thumbd("retry", "-c", c, "--all")
    assert (r.returncode, r.stdout) == (0, "retry: 1 failed file will be tried again\n")
    r = thumbd("redo", "--all", "-c", c)
    assert (r.returncode, r.stdout) == (0, "redo: 2 files will be rendered again\n")
    r = thumbd("redo", "-v", "--all", "-c", c)
    assert r.stdout.splitlines() == [
        "redo a.jpg",
        "redo b.jpg",
        "redo: 2 files will be rendered again",
    ]

    r = thumbd("once", "-c", c)  # the retried file fails again, in this run
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"thumbd: not done: 1 file failed in this run: {hint}"
    (d.incoming / "bad.jpg").unlink()
    r = thumbd("once", "-c", c)
    assert r.returncode == 0, r.stderr
    assert "not done" not in r.stderr


def test_plural() -> None:
    assert plural(1, "file") == "1 file"
    assert [plural(n, "URL") for n in (0, 2)] == ["0 URLs", "2 URLs"]
    assert plural(3, "failed file") == "3 failed files"
    assert (
        plural(2, "thumbnail of a source", "thumbnails of a source") == "2 thumbnails of a source"
    )


# -- make run and the README ------------------------------------------------------------------


def make_dry_run(target: str, tmp_path: Path) -> str:
    """What `make TARGET` would run on a machine with no venv yet (a venv path of its own)."""
    if shutil.which("make") is None:
        pytest.skip(reason="make is missing")
    r = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    run = make_dry_run("run", tmp_path)
    assert re.search(r"pip install --quiet -e \.$", run, re.M), run
    assert "[dev]" not in run
    assert f"{tmp_path / 'venv'}/bin/thumbd run -c thumbd.toml" in run
    for target in ("test", "lint"):
        assert "pip install --quiet -e '.[dev]'" in make_dry_run(target, tmp_path)


PROGRAM = re.compile(r"^(?:\$ )?(?:runuser -u \w+ -- )?(?:\S*/)?thumbd (?=[a-z-])")


def readme_commands() -> list[str]:
    """Every command line of README.md that runs thumbd: in code blocks and in `code spans`."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return [line for line in lines if PROGRAM.match(line.strip())]


def test_the_readme_commands_are_ones_thumbd_takes() -> None:
    commands = readme_commands()
    assert len(commands) > 30  # the search finds them
    for line in commands:
        words = shlex.split(PROGRAM.sub("", line.strip()), comments=True)
        words = [w.strip("[]") for w in words if w not in ("...",)]
        words = words[: words.index(">")] if ">" in words else words
        args = ["PATH" if w.endswith("...") else w for w in words if w]
        try:
            build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"README.md: thumbd does not take `{line}`")
