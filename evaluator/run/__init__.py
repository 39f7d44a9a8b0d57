"""Running a model: datasets, device, checks before any attack, the evaluation loop, shards, efficiency."""
