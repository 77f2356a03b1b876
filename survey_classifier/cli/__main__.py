"""``python -m survey_classifier.cli``."""

from survey_classifier.cli import main

main()
