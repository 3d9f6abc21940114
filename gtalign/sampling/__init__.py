"""Text generation with the decoder and its KV cache."""
