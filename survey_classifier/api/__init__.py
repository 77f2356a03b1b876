"""The results service: a read-only REST API (FastAPI) and the results web page.

Start it with ``survey-classifier serve`` or build the app with
:func:`create_app` and run it under any ASGI server.
"""

from survey_classifier.api.app import create_app

__all__ = ["create_app"]
