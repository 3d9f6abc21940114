"""Decoder models, checkpoints and tokenizers."""
