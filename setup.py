"""Builds genmodels._C: the C++ CPU kernels always, the CUDA kernels when possible.

CUDA is built when the installed torch has CUDA and nvcc is found, or with FORCE_CUDA=1;
FORCE_ONLY_CPU=1 skips it. Install with `pip install --no-build-isolation -e .` so the
extension is compiled against the torch already installed; a build that would compile
against another torch than the one installed in the target environment (pip's isolated
build fetches its own) stops with a message saying so.

Objects are kept in build/temp.* (GENMODELS_BUILD_TEMP overrides it), so a rebuild,
by pip or by `python setup.py build_ext --inplace`, recompiles only what changed.
The torch version the extension was compiled against is written next to it, to
genmodels/_build_info.py, which `import genmodels` compares with the running torch.
"""

import glob
import importlib.metadata
import os
import site
import sys
import sysconfig

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _target_torch_versions() -> list[str]:
    """Versions of torch installed where this package is being installed (without
    pip's isolated build environment, which hides them from sys.path)."""
    paths = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    if site.ENABLE_USER_SITE is not False:
        paths.add(site.getusersitepackages())
    dists = importlib.metadata.distributions(path=sorted(p for p in paths if os.path.isdir(p)))
    return sorted({d.version for d in dists if (d.metadata["Name"] or "").lower() == "torch"})


def _check_build_torch() -> None:
    """Refuses to compile against a torch other than the installed one: the extension
    would not load against it (C++ ABI) and genmodels would fall back to the reference."""
    if _env_flag("GENMODELS_ALLOW_TORCH_MISMATCH"):
        return
    building, installed = str(torch.__version__), _target_torch_versions()
    if building in installed:
        return
    where = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    if installed:
        sys.exit(
            f"genmodels: refusing to build genmodels._C against torch {building} ({where}, "
            f"most likely pip's isolated build environment): the environment it installs into "
            f"has torch {', '.join(installed)}, and the extension would not load there.\n"
            f"Build against the installed torch instead:\n"
            f"    pip install --no-build-isolation -e .     (or: pip install "
            f"--no-build-isolation .)\n"
            f"(GENMODELS_ALLOW_TORCH_MISMATCH=1 builds anyway.)"
        )
    print(
        f"genmodels: warning: building genmodels._C against torch {building} ({where}), but "
        f"the target environment has no torch yet; if another torch gets installed there, "
        f"`import genmodels` will say that _C does not match it. To be sure: pip install "
        f"torch first, then pip install --no-build-isolation .",
        file=sys.stderr,
    )


_check_build_torch()

from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _with_cuda() -> bool:
    if _env_flag("FORCE_ONLY_CPU"):
        return False
    if _env_flag("FORCE_CUDA"):
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _torch_uses_openmp() -> bool:
    return sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()


def _sources(pattern: str) -> list[str]:
    return sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
    )


def _extension():
    with_cuda = _with_cuda()
    sources = (
        _sources("csrc/bindings.cpp")
        + _sources("csrc/*/*_cpu.cpp")
        + _sources("csrc/*/*_autograd.cpp")
    )
    # Not compiled, but a change to one must rebuild: setuptools compares only these and
    # the sources with the built library before handing the sources to ninja, which
    # then recompiles just the objects whose sources or included headers changed.
    depends = _sources("csrc/**/*.h") + _sources("csrc/**/*.cuh") + ["setup.py"]
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
            depends=depends,
        )
    return CppExtension(
        "genmodels._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
        depends=depends,
    )


BUILD_INFO = """\
# Written by setup.py when it compiled genmodels._C (not in git): import genmodels
# compares it with the running torch.
TORCH_VERSION = "{torch}"
TORCH_CUDA = {cuda}
"""


class _BuildExtension(BuildExtension.with_options(use_ninja=True)):
    def finalize_options(self) -> None:
        super().finalize_options()
        # pip builds in a new temporary folder each time, where ninja recompiles every
        # source (minutes); a fixed folder keeps the objects for the next build.
        if "build_temp" not in self.distribution.get_option_dict("build_ext"):
            self.build_temp = os.environ.get("GENMODELS_BUILD_TEMP") or os.path.join(
                ROOT, "build", f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
            )

    def run(self) -> None:
        super().run()
        folders = {os.path.join(self.build_lib, "genmodels")}
        if self.inplace:
            build_py = self.get_finalized_command("build_py")
            folders.add(build_py.get_package_dir("genmodels"))
        cuda = f'"{torch.version.cuda}"' if torch.version.cuda else "None"
        text = BUILD_INFO.format(torch=torch.__version__, cuda=cuda)
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "_build_info.py"), "w") as f:
                f.write(text)


setup(
    packages=find_packages(where="python") + ["genkernels"],
    package_dir={"": "python", "genkernels": "genkernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExtension},
    zip_safe=False,
)
