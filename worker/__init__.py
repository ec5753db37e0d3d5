"""Celery app and tasks. Importing this package must not import torch."""
