"""The build refuses to compile against a torch other than the installed one, and
records the torch it compiled against for `import genmodels` to compare."""

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_py(*args, pythonpath=None):
    env = dict(os.environ)
    env.pop("GENMODELS_ALLOW_TORCH_MISMATCH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "setup.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_isolated_build_against_another_torch_is_refused(tmp_path):
    # What pip's isolated build does: a torch of its own first on sys.path, while the
    # environment being installed into has another.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    out = _setup_py("--name", pythonpath=str(tmp_path))
    assert out.returncode != 0
    assert f"refusing to build genmodels._C against torch 0.0.1 ({tmp_path}" in out.stderr
    assert f"has torch {torch.__version__}" in out.stderr
    assert "pip install --no-build-isolation -e ." in out.stderr


def test_build_against_the_installed_torch_goes_ahead():
    out = _setup_py("--name")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "genmodels"
    assert "refusing" not in out.stderr and "warning: building" not in out.stderr


def test_build_records_the_torch_it_compiled_against():
    from genmodels import _backend

    if _backend._C is None:
        pytest.skip(f"genmodels._C is not loaded: {_backend._C_ERROR}")
    try:
        from genmodels import _build_info
    except ImportError:
        pytest.skip("genmodels._C was not built by this setup.py (copied from elsewhere)")
    assert _build_info.TORCH_VERSION == torch.__version__
    assert _build_info.TORCH_CUDA == torch.version.cuda
