"""RL post-training: advantage estimators, policy/value/KL losses and loss aggregation."""
