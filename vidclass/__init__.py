"""vidclass ML core: model, ensemble, feature pipeline, training. Imports neither Flask nor Celery."""

__version__ = "0.1.0"

CLASS_NAMES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")
