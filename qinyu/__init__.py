"""qinyu: an open implementation of VITA-QinYu, an expressive spoken language model."""

__version__ = "0.1.0"
