"""The HTTP and WebSocket API (FastAPI) and its Binance-compatible edge."""
