"""Full-duplex turn taking: voice activity detection (and, later, ASR and turn-detector interfaces)."""
