"""medssl-jax: self-supervised pretraining and transfer evaluation for medical images."""
import setuptools

# Versions measured to install and work together on Python 3.11 (see README).
CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "ml-collections>=1.1.0,<1.2",
    "clu==0.0.12",
    "tensorboard",
    "numpy",
    "absl-py",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "pandas",
    "grain>=0.2.18,<0.3",  # data.pipeline='grain' (multi-process host pipeline, no TensorFlow)
]
HOST_DATA = [
    "tensorflow-cpu>=2.21,<2.22",
    "tensorflow-datasets==4.9.10",
]

setuptools.setup(
    name="medssl-jax",
    version="0.1.0",
    description="SimCLR / MICLe pretraining and transfer evaluation (fine-tuning, linear evaluation) for medical images in JAX/Flax",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["medssl_jax", "medssl_jax.*", "input_pipeline", "input_pipeline.*", "configs"]),
    install_requires=CORE + HOST_DATA,
    extras_require={"test": ["pytest>=8", "pytest-xdist",
                             # tests/training/test_gcs_workdir.py: gs:// workdirs on an offline GCS emulator
                             "gcp-storage-emulator", "gcsfs"],
                    # import-weights / export-weights (.pth, .safetensors) and their tests
                    "torch": ["torch>=2.14,<2.15", "torchvision>=0.29,<0.30", "safetensors>=0.8,<0.9",
                              "timm>=1.0.31,<1.1"]},  # --format timm tests
    entry_points={"console_scripts": ["medssl-jax=medssl_jax.cli:main"]},
)
