"""The app layer: CLI, demo, report, worker and Flower apps, process management.

The only code that imports the stage packages (producer, workers, trainer).
"""
