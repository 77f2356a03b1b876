"""What users say about sources and SOM neurons, and what the pipeline learns from it.

- :mod:`~survey_classifier.labels.store`: source and neuron labels written
  and read back (who, when, from where); the newest label of a source or
  neuron is its current one, the older ones its history.
- :mod:`~survey_classifier.labels.neurons`: a neuron's label carried to
  every source mapped to it, with a reliability calibrated on the sources
  users labelled themselves.
- :mod:`~survey_classifier.labels.columns`: the label columns of query
  results and exports.
- :mod:`~survey_classifier.labels.catalogue`: labels exported and imported
  as catalogue tables.
- :mod:`~survey_classifier.labels.ranking`: the anomaly list re-ranked by the
  interesting / not interesting labels (active learning), and
  :mod:`~survey_classifier.labels.simulate`, a simulated user to measure it.

Labels never change a pipeline result: they live in their own tables.
"""
