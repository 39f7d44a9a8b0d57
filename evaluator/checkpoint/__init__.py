"""A checkpoint from URL to state dict: URL forms, egress rules, download, file kinds, loading, key rules, compliance."""
