"""``multimodel serve``: a local web page and JSON API in front of a trained checkpoint."""

from multimodel.serve.app import create_app, is_loopback, serve

__all__ = ["create_app", "is_loopback", "serve"]
