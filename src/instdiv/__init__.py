"""instdiv: what in instruction-tuning data makes a model follow instructions it never saw."""

__version__ = "0.1.0"
