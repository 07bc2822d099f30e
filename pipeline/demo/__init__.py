"""The built-in demo: what ``python -m pipeline`` audits when given no data and no model.

A synthetic dataset with a planted shortcut (``synthetic.py``), the small CNN trained on it
(``default_cnn.py``, ``train_default.py``), the dataset spec read from the ``data.synthetic`` config
(``defaults.py``), both generated on first use and cached under ``cache_dir``. The audit pipeline only
receives a dataset and a model from here; nothing in it depends on this package.
"""
