"""Catalog Studio core: everything except page layout. Never imports streamlit.

Heavy imports (TensorFlow) are deferred to the modules that need them so that
the CLI's --help, the store and auth stay fast.
"""

__version__ = "0.1.0"
