"""CUDA sources compile on a machine without a GPU, so a CUDA error fails CI here.

The .cu kernels are torch-free and are compiled by CMakeLists.txt with nvcc for sm_80 and
sm_90. The torch glue (*_cuda.cpp and bindings.cpp with WITH_CUDA) needs a CUDA build of
torch to link, but its syntax and types are checked against the headers a CPU wheel
ships, with the one CMake-generated header it lacks stubbed.
"""

import concurrent.futures
import glob
import os
import shutil
import subprocess
import sysconfig

import pytest
import torch.utils.cpp_extension as cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc")
CMAKE = shutil.which("cmake")


def _cuda_include():
    """The CUDA toolkit's include folder (nvcc may be a wrapper script elsewhere)."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if NVCC:
        homes.append(os.path.dirname(os.path.dirname(os.path.realpath(NVCC))))
    for home in filter(None, homes):
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return os.path.join(home, "include")
    return None


CUDA_INCLUDE = _cuda_include()


@pytest.mark.skipif(NVCC is None or CMAKE is None, reason="nvcc or cmake not found")
def test_cuda_kernels_compile_for_sm80_and_sm90(tmp_path):
    build = tmp_path / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = subprocess.run(
        [CMAKE, "-S", ROOT, "-B", str(build), *generator, f"-DCMAKE_CUDA_COMPILER={NVCC}"],
        capture_output=True,
        text=True,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    jobs = str(os.cpu_count() or 1)
    built = subprocess.run(
        [CMAKE, "--build", str(build), "-j", jobs], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    archives = glob.glob(str(build / "*genmodels_cuda_kernels*"))
    assert archives, "no CUDA kernel library was produced"
    sources = glob.glob(os.path.join(ROOT, "csrc", "*", "*.cu"))
    assert sources


def _torch_cuda_headers():
    for include in cpp_extension.include_paths():
        if os.path.exists(os.path.join(include, "c10", "cuda", "CUDAGuard.h")):
            return True
    return False


GLUE = sorted(
    glob.glob(os.path.join(ROOT, "csrc", "*", "*_cuda.cpp"))
    + glob.glob(os.path.join(ROOT, "csrc", "*", "*_autograd.cpp"))
) + [os.path.join(ROOT, "csrc", "bindings.cpp")]


@pytest.fixture(scope="module")
def glue_checks(tmp_path_factory):
    """g++ -fsyntax-only of every glue file, all at once on the machine's cores (one at a
    time they take most of a minute each of this suite's time on two cores)."""
    root = tmp_path_factory.mktemp("glue")
    stub = root / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [os.path.join(ROOT, "csrc"), str(root / "stub")]
    includes += cpp_extension.include_paths()
    includes += [CUDA_INCLUDE, sysconfig.get_paths()["include"]]
    cmd = ["g++", "-std=c++20", "-fsyntax-only", "-DWITH_CUDA", "-DTORCH_EXTENSION_NAME=_C"]
    cmd += [f"-I{p}" for p in includes]

    def check(source):
        return subprocess.run([*cmd, source], capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(GLUE, pool.map(check, GLUE), strict=True))


@pytest.mark.skipif(CUDA_INCLUDE is None, reason="no CUDA toolkit headers found")
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
@pytest.mark.skipif(not _torch_cuda_headers(), reason="torch ships no c10/cuda headers")
@pytest.mark.parametrize("source", GLUE, ids=os.path.basename)
def test_cuda_glue_type_checks(source, glue_checks):
    result = glue_checks[source]
    assert result.returncode == 0, result.stderr[-4000:]
