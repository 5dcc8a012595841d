"""The engine's core: settings, the hook table and runner, plugin discovery and the ``Plugin`` base.

Not imported by plugin authors directly: ``qptwisted`` re-exports what is API.
"""
