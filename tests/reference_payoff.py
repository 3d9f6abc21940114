"""The reference prompt's illustrative payoff matrix (method reference, section 2.3), typed in here
independently of `gtalign.game.prompt.EXAMPLE_PAYOFF`, for the game and reward tests."""

PAYOFF = {
    "DQ_AQ": {"LLM": 2.2, "user": 1.9},
    "DQ_CQ": {"LLM": 3.1, "user": 3.5},
    "DQ_DA": {"LLM": 4.2, "user": 4.3},
    "VQ_AQ": {"LLM": 2.0, "user": 2.1},
    "VQ_CQ": {"LLM": 1.3, "user": 1.2},
    "VQ_DA": {"LLM": 2.0, "user": 1.8},
}
