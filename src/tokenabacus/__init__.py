"""tokenabacus: an OpenAI-compatible LLM gateway with exact, auditable token accounting."""

__version__ = "0.1.0"
