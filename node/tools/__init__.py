"""User tooling around the node: the `zkpot` CLI, the API client, testnet and compose writers.

Kept apart from the daemon runtime in `node/`: nothing here runs inside a node, and the
runtime never imports it.
"""
