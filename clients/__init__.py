"""Clients of the exchange's public APIs, outside the service: `clients.ccxt_local` points
ccxt's `binanceusdm` at a local sandbox (the service itself never imports ccxt)."""
