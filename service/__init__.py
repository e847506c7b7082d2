"""The service: the engine loop, durability, publishing, the demo market."""
