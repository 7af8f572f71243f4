"""Install actrack_fast (``pip install --no-build-isolation -e .`` for development)."""
from setuptools import find_packages, setup

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
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "pytest-timeout", "hypothesis", "matplotlib", "scikit-image"],
    },
    entry_points={"console_scripts": ["actrack-fast = actrack_fast.cli:main"]},
)
