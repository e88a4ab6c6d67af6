"""One small, reversible migration per file, named for what it does."""
