"""Anomaly scoring: rare and odd sources first."""

from survey_classifier.anomaly.scorer import COMPONENTS, AnomalyScorer

__all__ = ["AnomalyScorer", "COMPONENTS"]
