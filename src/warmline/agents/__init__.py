"""Agents that hold calls: for now the placeholder that answers everything."""
