"""A library user's view: the built wheel, installed into a fresh virtualenv, works outside the repository.

No network: the wheel is built without build isolation from this environment's setuptools,
installed without dependencies, and the fresh environment sees this one's packages (torch and
the rest) through a ``.pth`` file, after its own site-packages, so ``multimodel`` comes from
the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="lists the package's files with git")
def test_the_wheel_installs_into_a_fresh_virtualenv_and_runs_from_another_directory(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    source = tmp_path / "source"  # a clean copy: setuptools writes build/ and *.egg-info into the tree
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file() and not name.startswith("tests/"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          str(source), "-w", str(build)], tmp_path)
    (wheel,) = build.glob("multimodel-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    fresh_site = Path(site.stdout.strip())
    (fresh_site / "host-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip (this environment's, seen through the .pth) installs into the fresh one; --ignore-installed:
    # never touch the multimodel this environment has.
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
         tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(python), "-c", "import multimodel, multimodel.configs; print(multimodel.__file__);"
                  " print(multimodel.configs.__file__)"], elsewhere)
    for line in where.stdout.split():
        assert Path(line).is_relative_to(fresh_site), where.stdout  # the wheel's, not the repository's src/
    info = _run([str(venv / "bin" / "multimodel"), "info", "--config", "paper"], elsewhere)
    assert "config paper: hidden 1536, experts 240 (top 4)" in info.stdout
    assert "total" in info.stdout and "M parameters" in info.stdout
    listed = _run([str(venv / "bin" / "multimodel"), "tasks", "--config", "examples/image_folder"], elsewhere)
    assert "my_images" in listed.stdout and "declared (image_folder)" in listed.stdout  # the examples ship
    api = _run([str(python), "-c", "import multimodel; print(multimodel.load_config('demo').model.hidden_size,"
                " sorted(multimodel.TASKS)[:1], multimodel.MultiModel.__name__, multimodel.Predictor.__name__)"],
               elsewhere)
    assert api.stdout.split()[-2:] == ["MultiModel", "Predictor"]
