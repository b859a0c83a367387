"""Pools: the warm replicas of each function, and the hot path to them."""
