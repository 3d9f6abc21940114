"""Serving over the OpenAI chat-completions API: request checks, the batching engine, the app."""
