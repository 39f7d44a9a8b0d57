"""Result records: assembly, the files on disk and their sidecars, provenance, imported distances, statistics."""
