"""pico-JEPA: ultra-light V-JEPA video self-supervised learning and ensembles of small models."""

__version__ = "0.1.0"
