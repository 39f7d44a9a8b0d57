"""Test helpers shared by the test modules: a local HTTP server with injectable faults, tiny datasets."""
