"""Real (if simple) stages and models shared by several test modules."""
