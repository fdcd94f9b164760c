"""LightBrain: small GPT-style language models for medical text, built from scratch in PyTorch."""

__version__ = "1.0.0"

DISCLAIMER = (
    "LightBrain is for research and education only. Its output is not medical advice and must not be used "
    "for diagnosis or treatment."
)
