"""Multi-turn game episodes: a simulated user answers the assistant's clarifying questions."""
