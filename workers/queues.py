"""The queues workers listen on: the one list the Celery app and the command line use."""

__all__ = ["QUEUES"]

#: ``cpu`` (the default) and ``gpu`` (workers with a GPU, for the cnn stage).
QUEUES = ("cpu", "gpu")
