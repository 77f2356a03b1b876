"""Celery workers for bulk processing (installed as ``survey_classifier.workers``).

``app`` is the one Celery application; ``tasks`` holds the batch task. Start
a worker with ``survey-classifier worker`` (or ``celery -A
survey_classifier.workers.app worker -Q cpu``).
"""
