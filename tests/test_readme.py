"""The README as a reader uses it: every command it shows runs with options that exist, every shipped model
and repository path it names is there, and the HM build it tells the reader to run is the one patch-hm
prints. A renamed option, model or file fails here instead of in a reader's shell."""

from __future__ import annotations

import functools
import importlib
import json
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)  # also indented, in a list item
LONG_OPTION = re.compile(r"^--[a-z][a-z0-9-]*")
HELP_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _code_texts() -> list[str]:
    """The README's code: fenced blocks, indented blocks and inline spans (which may wrap a line)."""
    blocks = FENCE.findall(README)
    prose = FENCE.sub("", README)
    indented = "\n".join(ln[4:] for ln in prose.splitlines() if ln.startswith("    "))
    spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose)]
    return [*blocks, indented, *spans]


def _command_lines() -> list[str]:
    """Every line of code that runs a command, continuation lines (``\\``) joined."""
    out = []
    for text in _code_texts():
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            line = line.split(" #")[0].strip()
            if line:
                out.append(line)
    return out


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote in an example fragment
        return line.split()


def _invocations() -> list[tuple[str, list[str]]]:
    """(program, arguments) of each README command: ``codecnn ...`` (also after ``torchrun ... -m``),
    ``python -m hm_bridge ...``, ``python scripts/NAME.py ...`` and ``make TARGET``."""
    found = []
    for line in _command_lines():
        toks = _tokens(line)
        for i, t in enumerate(toks):
            rest = toks[i + 1 :]
            if t == "codecnn" and (i == 0 or toks[i - 1] in ("-m", "&&", ";", "$")):
                found.append(("codecnn", rest))
            elif t == "-m" and rest[:1] == ["hm_bridge"]:
                found.append(("hm_bridge", rest[1:]))
            elif re.fullmatch(r"scripts/\w+\.py", t) and (i == 0 or toks[i - 1] == "python"):
                found.append((t, rest))
            elif t == "make" and i == 0 and rest and not rest[0].startswith("-"):
                found.append(("make", rest[:1]))
    return found


@functools.cache
def _help_options(group_name: str, path: tuple[str, ...]) -> frozenset[str]:
    """The long options ``--help`` of that command lists."""
    from codecnn.cli import cli
    from hm_bridge.__main__ import main

    group = {"codecnn": cli, "hm_bridge": main}[group_name]
    r = CliRunner().invoke(group, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return frozenset(HELP_OPTION.findall(r.output))


def _resolve(group: click.Group, args: list[str]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The command paths an argument list can mean (a group without its subcommand: each of them), and
    the long options it gives."""
    path: list[str] = []
    cmd: click.Command = group
    for a in args:
        if not isinstance(cmd, click.Group) or a not in cmd.commands:
            break
        cmd = cmd.commands[a]
        path.append(a)
    paths = [tuple(path)]
    if isinstance(cmd, click.Group):  # e.g. "codecnn train ... --cache": any subcommand that has it
        paths = [(*path, name) for name in cmd.commands]
    options = [m.group(0) for a in args if (m := LONG_OPTION.match(a.lstrip("[(")))]
    return paths, options


def test_readme_names_commands():
    programs = {p for p, _ in _invocations()}
    assert {"codecnn", "hm_bridge", "make"} <= programs and any(p.startswith("scripts/") for p in programs)


def test_readme_commands_use_options_that_exist():
    """Each long option of each command in the README is one that command's ``--help`` lists."""
    from codecnn.cli import cli
    from hm_bridge.__main__ import main

    bad = []
    for program, args in _invocations():
        if program not in ("codecnn", "hm_bridge"):
            continue
        group = cli if program == "codecnn" else main
        paths, options = _resolve(group, args)
        if not paths[0] and args and not args[0].startswith("-") and args[0] not in ("...",):
            bad.append(f"{program} {args[0]}: no such command")
            continue
        known = set().union(*(_help_options(program, p) for p in paths))
        bad += [f"{program} {' '.join(paths[0])} {o}" for o in options if o not in known]
    assert not bad, "README options that --help does not list: " + "; ".join(sorted(set(bad)))


def _table_options() -> list[tuple[tuple[str, ...], str]]:
    """(command, option) for each ``--option`` in an option table (``| option | meaning |``) under a
    ``### `codecnn COMMAND``` heading."""
    out, command, table = [], None, False
    for line in FENCE.sub("", README).splitlines():
        if line.startswith(("## ", "### ")):
            m = re.match(r"### `codecnn ([a-z -]+?)`", line)
            command = tuple(m.group(1).split()) if m else None
        table = line.startswith("|") and (table or line.replace(" ", "").startswith("|option|"))
        if command and table:
            out += [(command, m.group(0)) for span in re.findall(r"`([^`]+)`", line) if (m := LONG_OPTION.match(span))]
    return out


def test_readme_option_tables_list_options_that_exist():
    """The option tables of the command sections (make-dataset, train rdn) list options of that command."""
    rows = _table_options()
    assert len({c for c, _ in rows}) >= 2
    bad = [f"codecnn {' '.join(c)} {o}" for c, o in rows if o not in _help_options("codecnn", c)]
    assert not bad, "README option tables list options that --help does not: " + "; ".join(bad)


def test_readme_scripts_and_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    bad = []
    for program, args in _invocations():
        if program == "make":
            if not re.search(rf"^{re.escape(args[0])}:", makefile, re.M):
                bad.append(f"make {args[0]}: no such target")
        elif program.startswith("scripts/"):
            script = ROOT / program
            if not script.is_file():
                bad.append(f"{program}: no such script")
                continue
            source = script.read_text()
            bad += [f"{program} {o}" for a in args if (o := LONG_OPTION.match(a)) and f'"{o.group(0)}"' not in source]
    assert not bad, "; ".join(sorted(set(bad)))


def test_readme_zoo_names_exist():
    names = {m["name"] for m in json.loads((ROOT / "codecnn/zoo/index.json").read_text())}
    named = set(re.findall(r"zoo:([a-z0-9][a-z0-9-]*[a-z0-9])", README)) - {"NAME"}
    assert named and not named - names, f"README names models the zoo does not ship: {sorted(named - names)}"


def _paths_named() -> set[str]:
    found = set()
    for m in re.finditer(r"(?<![\w/.$-])((?:tests/data|datasets|scripts|hm_bridge|codecnn)/[\w./*{},-]*)", README):
        p = m.group(1).rstrip(".,")
        if "<" in README[m.end(1) : m.end(1) + 1]:  # a placeholder follows (WORK/<seq>/...): not a path
            continue
        found.add(p)
    return found


def test_readme_paths_exist():
    """Every repository path the README names (tests/data/..., datasets/..., scripts/..., the packages'
    files) is in the repository; ``{a,b}`` names both, ``*`` at least one file."""
    assert any(p.startswith("tests/data/") for p in _paths_named())
    missing = []
    for p in sorted(_paths_named()):
        brace = re.search(r"\{([^}]*)\}", p)
        variants = [p[: brace.start()] + v + p[brace.end() :] for v in brace.group(1).split(",")] if brace else [p]
        for v in variants:
            if not (any(ROOT.glob(v)) if "*" in v else (ROOT / v).exists()):
                missing.append(v)
    assert not missing, f"README paths not in the repository: {missing}"


def test_readme_python_names_exist():
    """Every ``codecnn.x.y`` (module, or a name in a module) the README names can be imported."""
    missing = []
    for dotted in sorted(set(re.findall(r"(?<![\w/])codecnn(?:\.[a-z_][\w]*)+", README))):
        parts = dotted.split(".")
        for k in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:k]))
            except ImportError:
                continue
            try:
                for attr in parts[k:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(dotted)
            break
        else:
            missing.append(dotted)
    assert not missing, f"README names what codecnn does not have: {missing}"


def test_readme_hm_build_is_the_one_patch_hm_prints():
    """Every HM build line of the README passes patch-hm's RELEASE_CPPFLAGS (what builds HM 16.20 with GCC 12;
    patch-hm prints that command, tests/test_hm_bridge.py checks), and none suggests a CMake build HM 16.20
    does not have."""
    from hm_bridge.patch_hm import RELEASE_CPPFLAGS

    makes = [ln for ln in _command_lines() if ln.startswith("make -C")]
    assert makes, "the README shows no HM build"
    for line in makes:
        flags = dict(t.split("=", 1) for t in _tokens(line) if "=" in t)
        assert flags.get("RELEASE_CPPFLAGS") == RELEASE_CPPFLAGS, line
    assert not [ln for ln in _command_lines() if ln.split()[0] == "cmake"]


@pytest.mark.parametrize("leftover", ["-->", "<!--", "TODO", "XXX"])
def test_readme_has_no_editing_leftovers(leftover):
    assert leftover not in README
