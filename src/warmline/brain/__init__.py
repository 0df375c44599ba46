"""The handoff brain: when to escalate (triggers), what the human learns (context), where to."""
