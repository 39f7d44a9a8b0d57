"""The logic behind the GitHub workflows (``apb ci ...``), kept in Python so it is tested offline.

``plan`` (changed manifest entries -> matrix), ``artifacts`` (reading artifacts as untrusted data),
``collect`` (legs' outputs -> checked, merged records), ``report`` (-> the sticky comment's Markdown) and
``github`` (PyGithub: the comment and the check run). docs/automation.md shows how the workflows use them.
"""
