"""negforge: SHINE's hierarchical hard negatives and saliency ranking, end to end.

Importing ``negforge`` is cheap: torch, litellm and spaCy load only where a stage needs them.
"""

__version__ = "0.1.0"
