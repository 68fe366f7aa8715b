"""Package data: the default evaluation text."""
