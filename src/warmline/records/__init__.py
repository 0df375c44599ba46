"""Durable records of calls and handoffs, and the KPIs computed from them."""
