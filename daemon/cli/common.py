"""What every command shares: its errors, and opening the config, store and plugins."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from daemon.exits import EXIT_USAGE

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.pluginhost.manager import PluginManager
    from daemon.store import Store


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def config_of(args: argparse.Namespace) -> Config:
    from daemon.config import load_config

    path = args.config or os.environ.get("FRAMEWATCH_CONFIG")
    return load_config(path)


def store_of(cfg: Config, read_only: bool = False) -> Store:
    from daemon.store import Store

    return Store(cfg.storage_url(), read_only=read_only)


def plugins_of(cfg: Config) -> PluginManager:
    from daemon.pluginhost.manager import load_plugins

    return load_plugins(cfg)


def recording_id_of(store: Store, name: str, *, by_id: bool = False) -> int:
    """The stored recording a command-line argument names: its file's path (made absolute), or
    with `by_id` also its id; CliError when the store has none."""
    rec = store.recordings.find(os.path.abspath(name))
    if rec is None and by_id and name.isdigit():
        try:
            rec = store.recordings.get(int(name))
        except KeyError:
            rec = None
    if rec is None:
        raise CliError(f"{name}: no such recording in the store")
    return rec.id
