"""Every command the docs tell a reader to type is one that works, and every link leads somewhere.

From the code blocks of README.md and docs/**/*.md: each `auroraops ...` command names a real
subcommand whose `--help` lists every flag used (and, when the command has no placeholders,
parses as written); each `kubectl kustomize DIR` / `kubectl apply|delete|diff -k DIR` names a
directory that builds; each `make TARGET` names a target make can plan (`make -n`). Every
relative Markdown link names a file that exists and, with `#anchor`, one of its headings.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from auroraops.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}
OPERATORS = {">", ">>", "|", "&&", "||", ";", "2>", "<"}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(text: str) -> list[str]:
    """Fenced blocks in a shell language (or none), and indented blocks after a blank line."""
    blocks = [body for lang, body in re.findall(r"^ *```(\w*)[^\n]*\n(.*?)^ *```", text, flags=re.M | re.S)
              if lang.lower() in SHELL_LANGUAGES]
    outside = re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)
    blocks += [m.group(0) for m in re.finditer(r"(?:(?<=\n\n)|^)(?: {4}.*\n?)+", outside)]
    return blocks


def commands(text: str) -> list[list[str]]:
    """The commands of a document as token lists: continuations joined, prompts, the venv
    prefix and trailing comments dropped, cut at the first shell operator."""
    found = []
    for block in code_blocks(text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip().removeprefix("$ ")
            if re.search("[\u2500-\u25ff]", line):  # box drawing: a diagram, not a command
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            cut = next((i for i, t in enumerate(tokens) if t in OPERATORS), len(tokens))
            tokens = tokens[:cut]
            if tokens:
                tokens[0] = tokens[0].removeprefix(".venv/bin/")
            if tokens and (tokens[0] in ("auroraops", "make") or tokens[:2] == ["kubectl", "kustomize"]
                           or (tokens[0] == "kubectl" and "-k" in tokens)):
                found.append(tokens)
    return found


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def subparser_for(tokens: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser a command reaches, and the tokens after its name(s)."""
    current, rest = parser(), tokens[1:]
    while rest:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or rest[0] not in actions[0].choices:
            break
        current, rest = actions[0].choices[rest[0]], rest[1:]
    return current, rest


def auroraops_problems(tokens: list[str]) -> list[str]:
    command = " ".join(tokens)
    sub, rest = subparser_for(tokens)
    if sub is parser():
        return [f"`{command}`: no such auroraops command"]
    help_text = sub.format_help()
    options = {s for a in sub._actions for s in a.option_strings}
    found = [f"`{command}`: `{sub.prog} --help` does not list {flag}"
             for flag in (t.strip("[]").split("=", 1)[0] for t in rest if re.match(r"\[?--?[A-Za-z]", t))
             if flag not in options or flag not in help_text]
    # A synopsis (`FILE...`, `[--flag V]`, `<dir>`, `$VAR`) is checked for its flags only.
    placeholders = any("..." in t or "<" in t or "$" in t or "[" in t for t in tokens)
    if not found and not placeholders:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser().parse_args(tokens[1:])
        except SystemExit as e:
            if e.code:
                found.append(f"`{command}` does not parse: {err.getvalue().strip().splitlines()[-1]}")
    return found


@functools.cache
def kustomize_error(path: str) -> str | None:
    if not (ROOT / path).is_dir():
        return "no such directory"
    proc = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, cwd=ROOT)
    return proc.stderr.strip() or "failed" if proc.returncode else None


def kubectl_problems(tokens: list[str]) -> list[str]:
    path = tokens[2] if tokens[1] == "kustomize" else tokens[tokens.index("-k") + 1]
    if "<" in path or "$" in path:
        return []
    error = kustomize_error(path.rstrip("/"))
    return [f"`{' '.join(tokens)}`: {path} does not build: {error}"] if error else []


@functools.cache
def make_error(args: tuple[str, ...]) -> str | None:
    proc = subprocess.run(["make", "--no-print-directory", "-n", *args], capture_output=True, text=True, cwd=ROOT)
    return proc.stderr.strip() if proc.returncode else None


def make_problems(tokens: list[str]) -> list[str]:
    error = make_error(tuple(tokens[1:]))
    return [f"`{' '.join(tokens)}`: {error}"] if error else []


def problems(text: str) -> list[str]:
    found = []
    for tokens in commands(text):
        if tokens[0] == "auroraops":
            found += auroraops_problems(tokens)
        elif tokens[0] == "make":
            found += make_problems(tokens)
        elif shutil.which("kubectl"):
            found += kubectl_problems(tokens)
    return found


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_is_real(path):
    assert problems(path.read_text()) == []


def test_the_docs_hold_commands_of_every_kind():
    tokens = [t for p in doc_files() for t in commands(p.read_text())]
    kinds = {t[0] if t[0] != "kubectl" else "kubectl" for t in tokens}
    assert kinds == {"auroraops", "make", "kubectl"}
    assert ["make", "test"] in tokens
    assert ["kubectl", "apply", "-k", "manifests/overlays/prod"] in tokens


def test_commands_are_read_from_fenced_and_indented_blocks():
    text = ("Intro auroraops forecast --nope (prose, not a command).\n\n"
            "```sh\n$ .venv/bin/auroraops forecast --variant wave \\\n    --steps 2   # two steps\n```\n\n"
            "```yaml\nauroraops: not a command\n```\n\n"
            "    make demo DEMO_OUT=x\n")
    assert commands(text) == [["auroraops", "forecast", "--variant", "wave", "--steps", "2"],
                              ["make", "demo", "DEMO_OUT=x"]]


def test_wrong_commands_are_reported():
    text = "\n".join(["```sh",
                      "auroraops forecast --variant medium-range --stepz 4",
                      "auroraops frobnicate --now",
                      "auroraops forecast --variant nowhere --input a.nc --steps 1 --out b.nc",
                      "kubectl apply -k manifests/overlays/staging",
                      "make deploy",
                      "```"])
    found = problems(text)
    assert len(found) == 5, found
    assert "does not list --stepz" in found[0]
    assert "no such auroraops command" in found[1]
    assert "does not parse" in found[2] and "nowhere" in found[2]
    assert "manifests/overlays/staging does not build" in found[3]
    assert "make deploy" in found[4]


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, - for spaces."""
    text = re.sub(r"^ *```.*?^ *```", "", path.read_text(), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"^ *```.*?^ *```", "", path.read_text(), flags=re.M | re.S)
    found = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            found.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            found.append(f"{target}: no heading with that anchor")
    return found


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(path):
    assert broken_links(path) == []


def test_broken_links_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n\n[ok](a.md#title-here) [gone](b.md) [bad](a.md#nope)\n")
    assert broken_links(tmp_path / "a.md") == ["b.md: no such file", "a.md#nope: no heading with that anchor"]
