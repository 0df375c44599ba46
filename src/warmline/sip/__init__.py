"""The sans-IO SIP core: bytes and a clock in, messages and deadlines out.

Nothing in this package opens a socket, reads the clock or imports asyncio.
"""
