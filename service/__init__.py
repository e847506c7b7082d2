"""The service: the engine loop, durability, publishing, the demo market."""

import native

native.use()  # the compiled engine when one is built (native/), chosen before the engine loads
