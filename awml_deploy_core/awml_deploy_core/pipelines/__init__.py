"""Per-model pre/post-processing and the pipelines tying them to a backend."""
