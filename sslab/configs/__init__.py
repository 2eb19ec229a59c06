"""Built-in experiment files (the demo)."""
