"""What the node's HTTP API and its clients must agree on, in one place.

No imports, so the CLI, the compose writer and the healthcheck can use it without
loading the server (Starlette, Hypercorn) or the rest of the node.
"""

# Where a node serves its API unless config.toml says otherwise, and where the CLI looks.
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8645
# Headers of a model download (`/models/{height}`): its architecture and sha256 (hex).
ARCH_HEADER = "X-Zkpot-Architecture"
MODEL_HASH_HEADER = "X-Zkpot-Model-Hash"
# What a block without an aggregate (under an aggregating rule) made, wherever it is shown.
KEEP_PARENT = "no aggregate: the parent's model kept"
