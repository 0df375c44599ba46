"""Calls: SIP sessions joined to media legs, and what happens to them (transfers)."""
