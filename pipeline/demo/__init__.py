"""The built-in demo: what ``python -m pipeline`` audits when given no data and no model.

A synthetic dataset with a planted shortcut (``synthetic.py``), the small CNN trained on it
(``default_cnn.py``, ``train_default.py``), the dataset spec read from the ``data.synthetic`` config
(``defaults.py``), both generated on first use and cached under ``cache_dir``. The audit pipeline only
receives a dataset and a model from here, through its two seams (``sources.py``: the reader of
``data.source=synthetic`` and the builder of ``model.name=default``, which ``pipeline/data/sources.py`` and
``pipeline/model/from_config.py`` name by their dotted paths and import on first use); nothing in it imports
this package.
"""
