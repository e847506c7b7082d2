"""The engine: `engine.engine.Engine.apply(command) -> events`, pure and deterministic.

Importing the package chooses the build its modules are loaded from: the Python sources
here, or the same sources compiled by mypyc when `make compiled` built them (native/,
EXCHANGE_ENGINE). Both behave identically; the choice is made once, before any module of
the engine is loaded, and nothing in the engine depends on it.
"""

import native

native.use()
