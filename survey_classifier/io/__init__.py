"""Reading inputs: FITS cutouts and the folders, globs or catalogues that list them."""

from survey_classifier.io.fits import ReadLimits, read_cutout
from survey_classifier.io.inputs import expand_inputs, read_catalogue

__all__ = ["ReadLimits", "read_cutout", "expand_inputs", "read_catalogue"]
