"""Training and export of the transfer-learned CNN (the ``[train]`` extra).

- :mod:`~survey_classifier.cnn.data`: labelled catalogues, checks, the split;
- :mod:`~survey_classifier.cnn.backbones`: base networks;
- :mod:`~survey_classifier.cnn.equivariant`: the C8 rotation-equivariant layers and network;
- :mod:`~survey_classifier.cnn.dihedral`: the D8 (turns and flips) layers with steerable filters, and network;
- :mod:`~survey_classifier.cnn.calibration`: temperature scaling, calibration error, reliability diagrams;
- :mod:`~survey_classifier.cnn.norm_statistics`: precise batch-normalisation statistics, recomputed each epoch;
- :mod:`~survey_classifier.cnn.train`: the transfer-learning recipe;
- :mod:`~survey_classifier.cnn.export`: verified ONNX export and the model record;
- :mod:`~survey_classifier.cnn.table`: the transfer-learning table;
- :mod:`~survey_classifier.cnn.cli`: ``survey-classifier train cnn`` and ``cnn-table``.

Inference lives in :mod:`survey_classifier.stages.cnn` and needs only ONNX
Runtime. Importing this package does not import TensorFlow; the modules
that need it import it inside their functions.
"""

__all__: list[str] = []
