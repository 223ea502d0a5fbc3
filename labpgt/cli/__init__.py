"""The `labpgt` command line (thin: parse, load config, call the library, render)."""
