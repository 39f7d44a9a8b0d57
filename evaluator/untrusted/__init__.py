"""Untrusted input made safe: YAML/JSON with the line of every value, zip and npz archives, file kinds, download
hosts, and text bound for Markdown or a workflow log."""
