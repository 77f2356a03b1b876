"""Celery workers for bulk processing (see issue: distributed path)."""
