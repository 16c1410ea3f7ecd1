"""deploy/docker/: the CPU and GPU images install lensdask with deploy/install.sh, the one
install recipe (the README's jobs/run-demo, tests/run and CI call it too).

The Dockerfiles are parsed and checked here; `docker build` runs only where a Docker daemon
answers (not on the development machine, which has the CLI but no daemon).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
INSTALL = "deploy/install.sh"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile: comments dropped, continuations joined."""
    steps: list[tuple[str, str]] = []
    current = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instruction, _, arguments = current.partition(" ")
        steps.append((instruction.upper(), arguments.strip()))
        current = ""
    assert not current, f"{dockerfile.name}: a continuation runs off the end"
    return steps


def only(steps: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in steps if instruction == name]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_image_installs_with_the_one_install_script(dockerfile):
    steps = instructions(DOCKER / dockerfile)
    runs = only(steps, "RUN")
    installs = [run for run in runs if INSTALL in run]
    assert len(installs) == 1, "exactly one install step"
    assert not [run for run in runs if re.search(r"\bpip\b", run)], "no pip lines of its own"
    (copy,) = only(steps, "COPY")
    source, destination = copy.split()
    assert source == "."  # the whole build context (see .dockerignore)
    # install.sh is run from the copied tree, so its .venv lands in there ...
    workdirs_before = [
        arguments
        for instruction, arguments in steps[: steps.index(("RUN", installs[0]))]
        if instruction == "WORKDIR"
    ]
    assert workdirs_before[-1] == destination
    assert re.fullmatch(r'PYTHON=python3 deploy/install\.sh "\$EXTRAS"', installs[0])
    # ... and that .venv's bin is first on PATH, so the default command finds `lensdask`.
    (path,) = [env for env in only(steps, "ENV") if env.startswith("PATH=")]
    assert path == f"PATH={destination}/.venv/bin:$PATH"
    command = json.loads(only(steps, "CMD")[-1])
    assert command[0] == "lensdask"
    assert "lensdask" in pyproject()["project"]["scripts"]
    # The same script is what the README's commands run.
    assert INSTALL in (ROOT / "jobs" / "run-demo").read_text()
    assert INSTALL in (ROOT / "tests" / "run").read_text()


def test_documented_run_commands_name_files_in_the_image():
    """`lensdask run /opt/lensdask/jobs/X.yaml` in the usage lines: X is in the image."""
    (copy,) = only(instructions(DOCKER / "Dockerfile"), "COPY")
    destination = copy.split()[1]
    texts = [(DOCKER / name).read_text() for name in ("Dockerfile", "Dockerfile.gpu")]
    texts.append((ROOT / "README.md").read_text())
    texts = [re.sub(r"\\\n#?\s*", " ", text) for text in texts]  # join continued lines
    jobs = [
        job for text in texts for job in re.findall(r"docker run .*\s+lensdask run (\S+)", text)
    ]
    assert len(jobs) >= 3
    for job in jobs:
        assert job.startswith(destination + "/"), job
        assert (ROOT / job.removeprefix(destination + "/")).is_file(), job


def default_extras(dockerfile: str) -> set[str]:
    steps = instructions(DOCKER / dockerfile)
    (extras,) = [arg for arg in only(steps, "ARG") if arg.startswith("EXTRAS=")]
    return set(extras.removeprefix("EXTRAS=").split(","))


def test_cpu_image_python_base_with_the_nn_extra():
    (base,) = only(instructions(DOCKER / "Dockerfile"), "FROM")
    match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", base)
    assert match, base
    needed = pyproject()["project"]["requires-python"]
    assert int(match[1]) >= int(re.fullmatch(r">=3\.(\d+)", needed)[1])
    extras = default_extras("Dockerfile")
    assert extras == {"nn"}
    assert extras <= set(pyproject()["project"]["optional-dependencies"])


def test_gpu_image_has_a_cuda_base_and_the_cuda_extra():
    steps = instructions(DOCKER / "Dockerfile.gpu")
    (base,) = only(steps, "FROM")
    # TensorFlow's and JAX's wheels load CUDA 12 and cuDNN 9 from the system; Ubuntu 24.04
    # has Python 3.12 (22.04's 3.10 is below lensdask's requires-python).
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu24\.04", base), base
    extras = default_extras("Dockerfile.gpu")
    assert extras == {"nn", "cuda"}
    assert extras <= set(pyproject()["project"]["optional-dependencies"])
    # The interpreter comes from apt (the CUDA base has none), before the install step.
    runs = only(steps, "RUN")
    assert "python3-venv" in runs[0] and INSTALL in runs[1]


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context.

    Docker's rules for the patterns used here (no ``!`` exceptions): ``*`` and ``?`` within
    one path element, ``**`` across any number of them; a pattern that matches a directory
    leaves out everything under it.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        regex = re.escape(pattern.strip("/"))
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            return True
    return False


def build_context(patterns: list[str]) -> list[str]:
    """The files `docker build .` would send from the repository root."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [name for name in dirs if not ignored(prefix + name, patterns)]
        files += [prefix + name for name in names if not ignored(prefix + name, patterns)]
    return files


def test_dockerignore_keeps_what_install_needs_and_drops_environments():
    patterns = ignore_patterns()
    assert not [pattern for pattern in patterns if pattern.startswith("!")]
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "lensdask/__pycache__/cli.cpython-312.pyc",
        "lensdask-demo/survey/catalog/KIDS_0.0_-0.5.parquet",
        "test-artifacts/dashboard-status.png",
        "deploy/jupyter/.ipynb_checkpoints/lensdask-demo-checkpoint.ipynb",
    ):
        assert ignored(left_out, patterns), left_out
    context = set(build_context(patterns))
    readme = pyproject()["project"]["readme"]
    needed = {"pyproject.toml", readme, INSTALL, "lensdask/__init__.py", "lensdask/cli/__init__.py"}
    needed |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "jobs").glob("*.yaml")}
    assert needed <= context, needed - context
    assert not [path for path in context if path.startswith((".venv/", ".git/"))]


def docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_daemon(), reason="no Docker daemon answers here")
def test_cpu_image_builds_and_runs_lensdask(tmp_path):  # pragma: no cover - needs Docker
    tag = "lensdask:test"
    build = subprocess.run(
        [
            "docker",
            "build",
            "-f",
            "deploy/docker/Dockerfile",
            "--build-arg",
            "EXTRAS=",
            "-t",
            tag,
            ".",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run(["docker", "run", "--rm", tag], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "mock-survey" in run.stdout  # lensdask --help lists the stages
    version = subprocess.run(
        ["docker", "run", "--rm", tag, "lensdask", "--version"], capture_output=True, text=True
    )
    assert pyproject()["project"]["version"] in version.stdout
