import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import genmodels
from genmodels import _backend
from genmodels.ops import reparameterize_kl

CPU = torch.device("cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_backends_reports_every_kernel_family():
    report = genmodels.backends()
    assert set(report) == {"native_cpu", "native_cuda", "triton_cuda", "triton_cpu_interpreter"}
    for entry in report.values():
        assert isinstance(entry["available"], bool) and isinstance(entry["detail"], str)
        assert entry["detail"] == "ok" or not entry["available"] or "visible" in entry["detail"]


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.resolve("fast", "reparameterize_kl", CPU)


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "reference")
    assert _backend.resolve("auto", "reparameterize_kl", CPU) == "reference"
    # An explicit argument wins over the environment.
    assert _backend.resolve("reference", "reparameterize_kl", CPU) == "reference"
    monkeypatch.setenv(_backend.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match=_backend.ENV_VAR):
        _backend.resolve("auto", "reparameterize_kl", CPU)


def test_auto_on_cpu_picks_native_when_built():
    expected = "native" if _backend.native_available("cpu")[0] else "reference"
    assert _backend.resolve("auto", "reparameterize_kl", CPU) == expected


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        _backend.resolve("triton", "reparameterize_kl", CPU)


def test_native_cuda_unavailable_is_explained():
    if torch.cuda.is_available() and _backend._C is not None and _backend._C.has_cuda:
        pytest.skip("this install has native CUDA kernels")
    ok, why = _backend.native_available("cuda")
    assert not ok and why


def test_import_without_extension_falls_back_with_one_warning():
    # Simulate an install whose compiled extension is missing.
    code = """
import sys, warnings
sys.modules["genmodels._C"] = None
import torch, genmodels
from genmodels.ops import reparameterize_kl
assert not genmodels.backends()["native_cpu"]["available"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        z, kl = reparameterize_kl(torch.randn(2, 3), torch.randn(2, 3))
messages = [str(w.message) for w in caught if "reference" in str(w.message)]
assert len(messages) == 1, messages
assert "not built" in messages[0], messages[0]
try:
    reparameterize_kl(torch.randn(2, 3), torch.randn(2, 3), backend="native")
except RuntimeError as e:
    assert "not built" in str(e)
else:
    raise AssertionError("native must fail without the extension")
print("ok")
"""
    env = dict(os.environ)
    env.pop(_backend.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cuda_kernels_are_not_available_without_a_cuda_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    report = genmodels.backends()
    for name in ("native_cuda", "triton_cuda"):
        assert report[name]["available"] is False, report[name]
    if _backend._TRITON_ERROR is None:
        assert report["triton_cuda"]["detail"].startswith("triton is installed, but ")


def _import_genmodels(prelude: str, env_path: str | None = None) -> dict:
    """native_cpu's entry of genmodels.backends() and the fallback warning, in a fresh
    interpreter that first runs `prelude`."""
    code = f"""
import json, sys, warnings
{prelude}
import torch, genmodels
from genmodels.ops import reparameterize_kl
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    reparameterize_kl(torch.randn(2, 3), torch.randn(2, 3))
entry = genmodels.backends()["native_cpu"]
entry["warnings"] = [str(w.message) for w in caught if "reference" in str(w.message)]
entry["torch"] = torch.__version__
print(json.dumps(entry))
"""
    env = dict(os.environ)
    env.pop(_backend.ENV_VAR, None)
    if env_path is not None:
        env["PYTHONPATH"] = env_path
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_extension_built_against_another_torch_is_not_loaded():
    entry = _import_genmodels(
        "import types; sys.modules['genmodels._build_info'] = "
        "types.SimpleNamespace(TORCH_VERSION='1.0.0')"
    )
    assert not entry["available"]
    assert entry["detail"].startswith(
        f"genmodels._C was built against torch 1.0.0, but torch {entry['torch']} is running"
    )
    assert "pip install --no-build-isolation -e ." in entry["detail"]
    assert entry["warnings"] == [
        f"genmodels: using the pure-PyTorch reference kernels: {entry['detail']}"
    ]


def test_extension_with_undefined_symbols_is_called_an_abi_mismatch():
    finder = """
class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "genmodels._C":
            raise ImportError("/x/_C.so: undefined symbol: _ZN3c104impl3fooEv")
sys.meta_path.insert(0, Broken())
import types; sys.modules["genmodels._build_info"] = types.SimpleNamespace()
"""
    entry = _import_genmodels(finder)
    assert not entry["available"]
    assert entry["detail"].startswith(
        f"genmodels._C does not match the running torch {entry['torch']} "
        "(undefined symbol _ZN3c104impl3fooEv): it was compiled against another torch"
    )
    assert "pip install --no-build-isolation -e ." in entry["detail"]


def test_missing_extension_is_not_called_a_circular_import(tmp_path):
    # A copy of the package without _C, imported without the editable install's finder
    # (which would find the checkout's _C): what a source tree that was never built sees.
    source = os.path.dirname(genmodels.__file__)
    shutil.copytree(
        source,
        tmp_path / "genmodels",
        ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "_build_info.py", "__pycache__"),
    )
    prelude = "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]"
    entry = _import_genmodels(prelude, env_path=f"{tmp_path}{os.pathsep}{ROOT}")
    assert not entry["available"]
    assert "circular import" not in entry["detail"]
    assert entry["detail"] == (
        "genmodels._C is not built (no compiled extension next to genmodels/__init__.py); "
        "install with `pip install --no-build-isolation -e .`"
    )


def test_explicit_backends_agree_through_public_function():
    ok, why = _backend.native_available("cpu")
    if not ok:
        pytest.skip(f"'auto' is the reference itself here: {why}")
    assert _backend.resolve("auto", "reparameterize_kl", CPU) == "native"
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    results = [
        reparameterize_kl(mu, logvar, generator=torch.Generator().manual_seed(0), backend=b)[0]
        for b in ("reference", "auto")
    ]
    torch.testing.assert_close(results[0], results[1], rtol=2e-5, atol=2e-5)


def test_subpackages_are_reachable_after_import_genmodels():
    code = (
        "import sys, genmodels\n"
        "lazy = ('genmodels.models', 'genmodels.data', 'genmodels.training')\n"
        "assert not any(m in sys.modules for m in lazy), [m for m in lazy if m in sys.modules]\n"
        "assert genmodels.models.PixelCNN.__name__ == 'PixelCNN'\n"
        "assert callable(genmodels.data.load) and callable(genmodels.training.train)\n"
        "assert 'models' in dir(genmodels)\n"
        "try:\n"
        "    genmodels.no_such_thing\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_thing' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
