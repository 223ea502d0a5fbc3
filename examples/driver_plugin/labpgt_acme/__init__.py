"""Example labpgt driver plugin (see driver.py)."""
