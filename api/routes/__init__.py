"""Route modules: thin; parse at the edge, submit to the engine loop or read engine state."""
