"""microgpt: train tiny character-level GPTs on names and measure their held-out loss honestly."""

__version__ = "0.1.0"
