"""Per-session Python dependencies, shared by every backend: wheel downloads through the egress proxy, the
sha256 wheel store, sealed installed trees, and the offline install (docs/dependencies.md)."""
