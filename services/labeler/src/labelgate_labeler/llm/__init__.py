"""Labeling over any OpenAI-compatible chat API: prompts, structured output, confidence, limits, cost, budget.

Everything here but ``openai_client`` is pure; that module is the only one that imports the ``openai`` SDK."""
