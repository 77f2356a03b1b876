"""docs/service.md documents every endpoint of the API and every CLI command of the registry."""

from pathlib import Path

from survey_classifier.cli.models import models

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()


def test_every_endpoint_is_documented(app):
    paths = app.openapi()["paths"]
    for path, methods in paths.items():
        for method in methods:
            assert f"`{method.upper()} {path}`" in GUIDE or f"`{method.upper()} {path}`," in GUIDE, (
                f"{method.upper()} {path} missing from docs/service.md"
            )


def test_every_models_command_is_documented():
    for name in models.commands:
        assert f"survey-classifier models {name}" in GUIDE
