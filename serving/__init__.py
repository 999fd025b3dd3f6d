"""Serving: Triton model configs, the local Triton server, and push / status / rollback."""
