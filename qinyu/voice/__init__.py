"""Voices: CAM++ speaker vectors, text-to-timbre, and the voice library."""
