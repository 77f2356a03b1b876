"""An example survey-classifier plugin: a four-class FIRST morphology classifier."""

from sc_first4.stage import First4Stage

__all__ = ["First4Stage"]
