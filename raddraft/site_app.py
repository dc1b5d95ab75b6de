"""`raddraft app --server URL`: the thin reading workstation. Log in to the site server (a dialog, or
`--user` and `--password-stdin`), then the same main window over `desktop.remote.SiteWorkstation`: no
local store, node or model. Reports are signed by the logged-in user."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import platformdirs

from raddraft.config import AppConfig

APP_NAME = "RadDraft"


def site_settings(args: argparse.Namespace):
    """The client's frozen settings from the flags: where the server is, whom to trust, where images are cached."""
    from desktop.site_client import SiteSettings

    cache = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / "site-images"
    return SiteSettings(url=args.server, cache_dir=cache, ca_file=args.ca_file)


def as_user(config: AppConfig, user: str) -> AppConfig:
    """The configuration with the logged-in user as the reader (the server signs with the same name)."""
    return dataclasses.replace(config, reading=dataclasses.replace(config.reading, radiologist=user))


def open_site(settings, config: AppConfig, session):
    """The started workstation over the site server for a logged-in `session`'s client."""
    from desktop.remote import SiteWorkstation
    from desktop.site_client import SiteClient

    client = SiteClient(settings, session)
    return SiteWorkstation(client, as_user(config, session.user_name)).start()


def log_in(settings, args: argparse.Namespace):
    """A session: from `--user` and the password on stdin, else from the login dialog (None: cancelled)."""
    from desktop.site_client import SiteClient

    client = SiteClient(settings)
    try:
        if args.password_stdin and args.user:
            return client.login(args.user, sys.stdin.readline().rstrip("\n"))
        from desktop.login_dialog import LoginDialog

        dialog = LoginDialog(settings.url, client.login, user=args.user or "")
        return dialog.session if dialog.exec() == LoginDialog.DialogCode.Accepted else None
    finally:
        client.close()


def run_site_app(args: argparse.Namespace, config: AppConfig) -> int:
    from desktop.app import application, run_app
    from desktop.site_client import SiteError
    from raddraft.qt_signals import quit_on_signals

    restore_signals = quit_on_signals(application())
    settings = site_settings(args)
    try:
        try:
            session = log_in(settings, args)
        except SiteError as error:
            print(f"raddraft: {error}", file=sys.stderr)
            return 1
        if session is None:
            return 1
        workstation = open_site(settings, config, session)

        def print_ready() -> None:
            print(f"RadDraft window ready, {session.user_name} ({session.role}) on {settings.url}", flush=True)

        return run_app(workstation, screenshot=args.screenshot, exit_when_ready=args.exit_when_ready,
                       on_ready=print_ready if args.exit_when_ready else None)
    finally:
        restore_signals()
