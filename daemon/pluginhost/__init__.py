"""The plugin host: the pluggy manager (manager.py), the outbox dispatcher (dispatch.py) and the
default analyzer with the analyzer contract every plugin's analyzer is held to (analyzer.py).

Plugins, built-in or installed, are found through the `framewatch` entry-point group; nothing in
`daemon/` imports the `plugins` package by name.
"""
