"""Deployed models at a site: the model bundle, local prediction and ONNX export.

- :mod:`fedcare.inference.bundle`: what a model travels with (spec, parameters, feature names
  and order, frozen imputation and scaling statistics, decision threshold, card) in a folder or
  zip of JSON and ``.npz`` files, with a manifest of SHA-256 hashes checked on load;
- :mod:`fedcare.inference.site_statistics`: a site freezes its own training statistics into a
  bundle trained with local scaling;
- :mod:`fedcare.inference.frozen`: the frozen preprocessing, the same arithmetic as a site's
  training-time :class:`~fedcare.site.preprocess.Preprocessor`;
- :mod:`fedcare.inference.predict`: ``fedcare site predict`` (rows in, scores out; nothing
  leaves the site), with :mod:`~fedcare.inference.predict_images` (DICOM folders) and
  :mod:`~fedcare.inference.package_scorer` (study package models, from the site's store);
- :mod:`fedcare.inference.onnx_export`: the bundle as one ONNX graph (the ``onnx`` extra);
- monitoring at the site: :mod:`fedcare.inference.monitor` (version folder, prediction log,
  reference), :mod:`fedcare.inference.drift` (population stability index),
  :mod:`fedcare.inference.feedback` (``fedcare site feedback``), ``withhold`` (small cells) and
  ``alerts`` (thresholds, the proposed fine-tuning study).

Layer: above the core and the transport, below the coordinator and the site (both may use it:
the coordinator writes bundles, a site keeps and runs them); it imports neither.
"""
