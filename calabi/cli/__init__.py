"""The ``calabi`` command line."""
