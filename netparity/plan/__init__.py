"""The planner: choose the probes that prove every rule and reveal every migration risk."""
