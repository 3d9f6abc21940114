"""gtalign: Game-Theoretic Alignment of LLM assistants in JAX/Flax."""

__version__ = "0.1.0"
