"""The game layer: the four-block trace, payoff bimatrices, selection rules and pricing."""
