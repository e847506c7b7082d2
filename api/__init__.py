"""The HTTP and WebSocket API (FastAPI) and its Binance-compatible edge."""

import native

native.use()  # the compiled engine when one is built (native/), chosen before the engine loads
