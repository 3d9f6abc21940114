"""The paper's claim, tested: RL arms on different welfare objectives from one warm start."""
