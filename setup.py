"""Install actrack_fast (``pip install --no-build-isolation -e .`` for development).

The C++/CUDA extension ``actrack_fast._C`` (csrc/) is built with the torch that is already installed, hence
``--no-build-isolation``:

- torch imports, ``torch.version.cuda`` is set and nvcc is found: CUDA + C++ kernels (sm_90 and PTX);
- torch imports without CUDA (or no nvcc): C++ kernels only;
- torch does not import: pure Python, the reference PyTorch ops serve every call.

``FORCE_CUDA=1`` makes a missing CUDA toolchain an error; ``ACTRACK_NO_EXT=1`` skips the extension.
``TORCH_CUDA_ARCH_LIST`` (default ``9.0+PTX``) and ``CUDA_HOME`` (default: the toolkit root of the nvcc on PATH)
can be overridden; ``MAX_JOBS`` bounds parallel compile jobs.
"""
import glob
import os
import re
import shutil
import subprocess

from setuptools import find_packages, setup

EXTENSION = "actrack_fast._C"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def cuda_toolkit_root():
    """The toolkit root of the nvcc on PATH, or None. PATH may hold a wrapper script for nvcc, from which torch
    would guess the wrong root: nvcc reports its real one (TOP) in a dry run."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        dry_run = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-E", os.devnull], capture_output=True, text=True,
                                 timeout=60)
        match = re.search(r"^#\$ TOP=(.+)$", dry_run.stdout + dry_run.stderr, re.MULTILINE)
    except (OSError, subprocess.SubprocessError):
        match = None
    bin_dir = os.path.dirname(os.path.realpath(nvcc))
    return os.path.realpath(match.group(1).strip() if match else os.path.join(bin_dir, ".."))


def extension_build():
    """(ext_modules, cmdclass) for the extension this environment can build."""
    force_cuda = env_flag("FORCE_CUDA")
    if env_flag("ACTRACK_NO_EXT"):
        return [], {}
    try:
        import torch
    except ImportError:
        if force_cuda:
            raise RuntimeError("FORCE_CUDA=1 but torch is not importable: install torch first, then "
                               "`pip install --no-build-isolation .`")
        return [], {}

    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or cuda_toolkit_root()
    with_cuda = bool(torch.version.cuda) and cuda_home is not None and os.path.exists(
        os.path.join(cuda_home, "bin", "nvcc"))
    if force_cuda and not with_cuda:
        raise RuntimeError(f"FORCE_CUDA=1 but the CUDA extension cannot be built: torch.version.cuda="
                           f"{torch.version.cuda!r}, CUDA toolkit root={cuda_home!r} (needs bin/nvcc)")
    if with_cuda:
        # torch.utils.cpp_extension reads both when imported; without a visible GPU it cannot guess the arch.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # -fopenmp: at::parallel_for is inline and parallelises only in code compiled with OpenMP. -lstdc++: the link
    # may run through the C driver of Python's LDSHARED, which leaves libstdc++ out of the library's dependencies.
    link_args = ["-fopenmp", "-lstdc++"]
    sources = ["csrc/module.cpp", "csrc/checks.cpp", "csrc/xcorr.cpp", "csrc/crop.cpp", "csrc/boxes.cpp",
               *sorted(glob.glob("csrc/cpu/*.cpp"))]
    # -ffp-contract=off: the crop and box ops reproduce their references' roundings exactly, and a fused multiply-add
    # rounds once where the reference rounds twice. GCC contracts by default wherever the target has FMA (not
    # baseline x86-64, but aarch64 and -march=native builds); the device code uses explicitly rounded intrinsics.
    compile_args = {"cxx": ["-O3", "-fopenmp", "-ffp-contract=off"]}
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        compile_args["nvcc"] = ["-O3", "-lineinfo"]
        extension = CUDAExtension(EXTENSION, sources, define_macros=[("WITH_CUDA", None)],
                                  extra_compile_args=compile_args, extra_link_args=link_args)
    else:
        extension = CppExtension(EXTENSION, sources, extra_compile_args=compile_args, extra_link_args=link_args)
    return [extension], {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_build()

setup(
    name="actrack-fast",
    version="0.1.0",
    description="Fast ACTrack visual object tracker: frozen ViT + additive siamese conv net + coordinate decoder",
    packages=find_packages(include=["actrack_fast", "actrack_fast.*", "kernels", "kernels.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy",
        "timm>=1.0",
        "einops",
        "safetensors",
        "opencv-python-headless",
        "imageio",
        "imageio-ffmpeg",
        "tqdm",
        "pyyaml",
        "pillow",
        "matplotlib",  # success/precision plots of `actrack-fast eval`
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "pytest-timeout", "hypothesis", "scikit-image"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["actrack-fast = actrack_fast.cli:main"]},
)
