"""Built-in framewatch plugins. They import only `daemon.hookspecs` and `daemon.models`."""
