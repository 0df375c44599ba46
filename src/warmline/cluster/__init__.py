"""State several warmline nodes share through Redis: who owns which call, handoff contexts,
concurrency limits per destination and trunk. Without Redis, one node keeps it in memory."""
