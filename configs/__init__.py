"""attnlab.configs: one file per study with ``get_config(arg)``; each table's sweep (``sweep(add)``)
lives with its results in experiments/<study>/ and imports the study's ``get_config``."""
