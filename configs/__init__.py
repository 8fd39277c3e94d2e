"""attnlab.configs: one file per study with ``get_config(arg)`` and ``sweep(add)``."""
