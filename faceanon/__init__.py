"""faceanon: measure how much a face anonymization method hides from face recognition."""

__version__ = "0.1.0"
