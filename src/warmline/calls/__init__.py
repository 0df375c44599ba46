"""Calls: SIP sessions joined to media legs (the switchboard), and the SIP-only answerer."""
