"""A survey-classifier plugin: compact or extended radio sources, from the measure stage's fluxes."""
