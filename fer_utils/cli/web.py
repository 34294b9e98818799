"""``fer web init-db | create-admin | purge`` and ``fer serve``: the Flask site's commands."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fer_utils.errors import ConfigError

# A production WSGI server (waitress, pure Python, works on Windows too); `--debug` uses Flask's.
DEFAULT_HOST = "127.0.0.1"


def _app(instance: Path | None, bundle: Path | None = None, **config):
    from fer_utils.web import create_app

    if instance is not None:
        config["INSTANCE_PATH"] = str(instance)
    if bundle is not None:
        config["FER_BUNDLE"] = str(bundle)
    return create_app(config)


instance_option = click.option("--instance", type=click.Path(path_type=Path), default=None,
                               help="Instance folder (database, uploads, secret key). Default: $FER_INSTANCE_DIR, "
                                    "else <project>/data/instance.")


@click.group("web")
def web():
    """The web site's database and files."""


@web.command("init-db")
@instance_option
def init_db(instance):
    """Create the database tables (existing tables and rows are kept)."""
    app = _app(instance)
    click.echo(f"database ready: {app.config['SQLALCHEMY_DATABASE_URI']}")


@web.command("create-admin")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else prompted).")
@click.option("--promote", is_flag=True, help="Give an existing user admin rights (and a new password if given).")
@instance_option
def create_admin_cmd(username, password_stdin, promote, instance):
    """Create an admin account (admin rights come from the role, never from the name)."""
    from fer_utils.web.extensions import db
    from fer_utils.web.maintenance import create_admin

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif promote:
        password = None
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    app = _app(instance)
    with app.app_context():
        user = create_admin(username, password, promote=promote)
        click.echo(f"admin {user.username!r} (id {user.id}) ready")
        db.session.remove()


@web.command("purge")
@click.option("--days", type=int, default=None, help="Purge photos older than this (default: RETENTION_DAYS / "
                                                      "$FER_RETENTION_DAYS).")
@instance_option
def purge(days, instance):
    """Delete uploaded photos older than the retention period (the prediction records stay)."""
    from fer_utils.web.maintenance import purge_uploads
    from fer_utils.web.settings import retention_days

    app = _app(instance)
    days = retention_days(days if days is not None else app.config.get("RETENTION_DAYS"), "--days")
    if days is None:
        raise ConfigError("no retention period: pass --days N or set FER_RETENTION_DAYS")
    with app.app_context():
        click.echo(f"purged the photos of {purge_uploads(days)} prediction(s) older than {days} day(s)")


def share_tunnel(port: int, env=None):
    """An ngrok tunnel to ``port`` through pyngrok; ConfigError saying why when it cannot be opened."""
    env = os.environ if env is None else env
    try:
        from pyngrok import conf, ngrok
    except ImportError:
        raise ConfigError("--share needs pyngrok: pip install pyngrok (and an ngrok account's token in "
                          "NGROK_AUTHTOKEN)") from None
    token = env.get("NGROK_AUTHTOKEN")
    if not token:
        raise ConfigError("--share needs NGROK_AUTHTOKEN (your ngrok account's token) in the environment")
    conf.get_default().auth_token = token
    return ngrok.connect(port, "http")


def loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the site to your network).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True, help="waitress worker threads.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Model bundle to serve. Default: the best validation macro F1 among those trained on --data.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Without --bundle: serve a model trained on this data set (default: data/synthetic).")
@instance_option
@click.option("--share", is_flag=True, help="Also open a public ngrok tunnel (needs pyngrok and NGROK_AUTHTOKEN).")
@click.option("--debug", is_flag=True, help="Flask's development server with the debugger (never in production).")
@click.option("--no-rate-limit", is_flag=True, help="Turn the rate limits off (benchmarks on 127.0.0.1 only).")
def serve(host, port, threads, bundle, data_path, instance, share, debug, no_rate_limit):
    """Serve the web site with waitress (a production WSGI server)."""
    import logging

    for flag, on in (("--debug", debug), ("--no-rate-limit", no_rate_limit)):
        # the debugger runs any code typed into its page; no limits invite password guessing
        if on and (share or not loopback(host)):
            raise click.UsageError(f"{flag} is for this machine only: use it with --host 127.0.0.1 (got "
                                   f"{host!r}{' and --share' if share else ''})")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = {}
    if data_path is not None:
        config["FER_DATA"] = str(data_path)
    if no_rate_limit:
        config["RATELIMIT_ENABLED"] = False
    app = _app(instance, bundle, **config)
    with app.app_context():
        service = app.extensions["fer_model"]
        try:
            info = service.info()
            click.echo(f"model: {info['model']} ({info['path']}), validation macro F1 {info['val_macro_f1']:.3f}")
        except Exception as exc:  # the site still starts and says so on its pages
            click.echo(f"warning: {exc}", err=True)
    if share:
        tunnel = share_tunnel(port)
        click.echo(f"public address: {tunnel.public_url}")
    click.echo(f"serving on http://{host}:{port}/ (Ctrl-C stops)")
    if debug:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return
    from waitress import serve as waitress_serve

    waitress_serve(app, host=host, port=port, threads=threads, ident="fer")
