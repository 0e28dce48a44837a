"""Training data: the sample format, preparation, rendering and packing."""
