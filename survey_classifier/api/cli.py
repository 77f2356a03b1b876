"""``survey-classifier serve``: the results API and web page under uvicorn."""

from __future__ import annotations

import os

import click

from survey_classifier.cli.options import db_option

__all__ = ["serve"]


@click.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--som-image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PNG of the SOM prototypes to show under the node grid.")
@click.option("--write-token-env", default="SURVEY_CLASSIFIER_API_TOKEN", show_default=True,
              help="Environment variable holding the bearer token that writing endpoints require "
                   "(unset: the service is read-only).")
@click.option("--render-slots", default=None, type=click.IntRange(1, 64),
              help="Pictures drawn at once (default 2); more waiting requests are answered 503 with Retry-After.")
@click.option("--image-cache-mb", default=None, type=click.IntRange(1, 65536),
              help="Bound of the cache of drawn pictures, MiB (default 64).")
def serve(db_url, host, port, som_image, write_token_env, render_slots, image_cache_mb):
    """Serve the results (REST API, OpenAPI docs at /docs, web page at /)."""
    import uvicorn

    from survey_classifier.api import create_app
    from survey_classifier.db.engine import resolve_db_url

    token = os.environ.get(write_token_env) or None
    app = create_app(resolve_db_url(db_url), write_token=token, som_image=som_image, render_slots=render_slots,
                     image_cache_bytes=None if image_cache_mb is None else image_cache_mb * 1024 * 1024)
    mode = "read-write (token required)" if token else "read-only"
    click.echo(f"serving {mode} on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
