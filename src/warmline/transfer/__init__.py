"""Transfers: handoffs, the attempts that carry them out, fallbacks, and the chain."""
