"""Agents that hold calls for the AI: scripted flows and WebSocket bots."""
