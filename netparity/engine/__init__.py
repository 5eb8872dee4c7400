"""The policy engine: compile a snapshot once, evaluate traffic under a dataplane many times."""
