"""Builds genmodels._C: the C++ CPU kernels always, the CUDA kernels when possible.

CUDA is built when the installed torch has CUDA and nvcc is found, or with FORCE_CUDA=1;
FORCE_ONLY_CPU=1 skips it. Install with `pip install --no-build-isolation -e .` so the
extension is compiled against the torch already installed.
"""

import glob
import os
import sys

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _with_cuda() -> bool:
    if _env_flag("FORCE_ONLY_CPU"):
        return False
    if _env_flag("FORCE_CUDA"):
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _torch_uses_openmp() -> bool:
    return sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extension():
    with_cuda = _with_cuda()
    sources = (
        _sources("csrc/bindings.cpp")
        + _sources("csrc/*/*_cpu.cpp")
        + _sources("csrc/*/*_autograd.cpp")
    )
    # Without errno and trap semantics GCC vectorizes sqrt and if-converts the selects in
    # the kernels' loops; torch itself is built with both flags.
    cxx = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden"]
    link = []
    macros = []
    if _torch_uses_openmp():
        # at::parallel_for is a header-inline OpenMP region: without -fopenmp it runs serially.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if with_cuda:
        sources += _sources("csrc/*/*_cuda.cpp") + _sources("csrc/*/*.cu")
        macros.append(("WITH_CUDA", None))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        return CUDAExtension(
            "genmodels._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    return CppExtension(
        "genmodels._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


setup(
    packages=find_packages(where="python") + ["genkernels"],
    package_dir={"": "python", "genkernels": "genkernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
