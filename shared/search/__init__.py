"""The bilevel search: the Architect (alpha step) and the loop with its hook moments."""
