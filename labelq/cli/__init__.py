"""The ``labelq`` command line."""
