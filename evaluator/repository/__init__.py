"""The repository's data files: submissions, manifests, taxonomy, schemas, and their validation."""
