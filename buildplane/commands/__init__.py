"""One module per CLI command: each turns parsed args into calls on the engine's modules and prints the result."""
