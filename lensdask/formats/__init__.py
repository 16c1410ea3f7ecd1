"""On-disk formats: one module per dataset lensdask writes, with its writer and its reader.

- :mod:`~lensdask.formats.files`: atomic file writes, JSON values, tables of any format.
- :mod:`~lensdask.formats.parquet`: Parquet datasets (file listings, staged commits).
- :mod:`~lensdask.formats.targets`: the targets dataset (``lensdask select``).
- :mod:`~lensdask.formats.cutout_store`: the cutout store (``lensdask cutouts``).
- :mod:`~lensdask.formats.trainset`: the training set (``lensdask simulate``).
- :mod:`~lensdask.formats.model_dir`: the model directory (``lensdask train``).
- :mod:`~lensdask.formats.scores`: the scores (``lensdask score``).
- :mod:`~lensdask.formats.candidates`: the candidates table (``lensdask candidates``).
- :mod:`~lensdask.formats.grades`: grades CSV files (``lensdask inspect``, ``lensdask rank``).

The stages read and write their data only through these modules, which import no stage.
"""
