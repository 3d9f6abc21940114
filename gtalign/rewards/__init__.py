"""Realised user and LLM welfare per task, and the judges that score responses."""
