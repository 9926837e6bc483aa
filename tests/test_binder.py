"""Binder's set-up (`binder/`) builds an environment that runs the notebooks.

repo2docker clones the repository, installs `binder/requirements.txt`, then runs
`binder/postBuild` from the repository root. These tests do the same on a copy
of the working tree, in a fresh venv without system site-packages, and then
execute a notebook with that venv's own kernel: if `binder/` stops pinning
something the notebooks need, or postBuild stops installing wsnb, they fail.

Slow (pip installs JupyterLab: a minute or so with a warm pip cache) and they
need the package index.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/09_structured_data.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Executed by the Binder venv's python: run the notebook with nbclient, then one
# extra cell that reports which interpreter and which wsnb the kernel used.
RUNNER = """
import json, os, sys
import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import json, sys, wsnb; print(json.dumps([sys.prefix, wsnb.__file__]))"))
NotebookClient(nb, timeout=60, kernel_name="python3",
               resources={"metadata": {"path": os.path.dirname(path)}}).execute()
print(nb.cells[-1].outputs[0]["text"].strip())
"""

# Not wanted in the copy: VCS data, other venvs, caches, build output.
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".ci-venv", "venv", "__pycache__", "*.egg-info", ".pytest_cache",
    ".ruff_cache", ".hypothesis", ".ipynb_checkpoints", "build", "dist",
)


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {done.returncode}\n"
                    f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(repo copy, venv, environment) after requirements.txt and postBuild, as on Binder."""
    root = tmp_path_factory.mktemp("binder")
    repo = root / "repo"
    shutil.copytree(REPO, repo, ignore=IGNORE)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JUPYTER_PATH", "PIP_USER")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PYTHONNOUSERSITE="1",  # nothing from ~/.local either
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        # Jupyter's per-user dirs could hold a "python3" kernelspec pointing elsewhere.
        JUPYTER_DATA_DIR=str(root / "jupyter-data"),
        JUPYTER_CONFIG_DIR=str(root / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"),
        IPYTHONDIR=str(root / "ipython"),
        MPLCONFIGDIR=str(root / "matplotlib"),
    )
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
         cwd=repo, env=env, timeout=240)
    _run(["bash", "binder/postBuild"], cwd=repo, env=env, timeout=120)
    return repo, venv, env


def test_postbuild_installs_wsnb_from_the_repo(binder_env: tuple[Path, Path, dict[str, str]]):
    repo, venv, env = binder_env
    out = _run([str(venv / "bin" / "python"), "-c",
                "import json, sys, wsnb; print(json.dumps([sys.prefix, wsnb.__file__]))"],
               cwd=venv, env=env, timeout=60)
    prefix, wsnb_file = json.loads(out.strip().splitlines()[-1])
    assert Path(prefix) == venv
    assert Path(wsnb_file).is_relative_to(repo), "postBuild installs the repo's wsnb (editable)"


def test_notebook_runs_in_the_binder_env(binder_env: tuple[Path, Path, dict[str, str]]):
    repo, venv, env = binder_env
    out = _run([str(venv / "bin" / "python"), "-c", RUNNER, str(repo / NOTEBOOK)],
               cwd=repo, env=env, timeout=180)
    prefix, wsnb_file = json.loads(out.strip().splitlines()[-1])
    assert Path(prefix) == venv, "the kernel ran on the Binder venv's python"
    assert Path(wsnb_file).is_relative_to(repo)


def _imported_modules(notebook: Path) -> set[str]:
    modules: set[str] = set()
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        try:  # cells may use top-level await; IPython magics (%...) do not parse: skip those
            tree = compile(source, notebook.name, "exec",
                           flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    # A module the notebook writes itself (e.g. notebook 08's bank.py) needs no install.
    text = notebook.read_text()
    return {m for m in modules if f'\\"{m}.py\\"' not in text and f"'{m}.py'" not in text}


def test_every_notebook_import_is_installed(binder_env: tuple[Path, Path, dict[str, str]]):
    """Only one notebook is executed; the others must at least find their imports on Binder."""
    repo, venv, env = binder_env
    wanted: dict[str, list[str]] = {}
    for notebook in sorted((repo / "notebooks").glob("*.ipynb")):
        for module in _imported_modules(notebook) - set(sys.stdlib_module_names):
            wanted.setdefault(module, []).append(notebook.name)
    assert wanted, "no notebook imports found"
    check = ("import importlib.util, json, sys; "
             "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))")
    out = _run([str(venv / "bin" / "python"), "-c", check, *sorted(wanted)],
               cwd=repo, env=env, timeout=60)
    missing = json.loads(out.strip().splitlines()[-1])
    assert not missing, "missing on Binder (add to binder/requirements.txt): " + ", ".join(
        f"{m} (used by {', '.join(wanted[m])})" for m in missing)
