"""Audio I/O, resampling and feature front ends."""
