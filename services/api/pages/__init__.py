"""Server-rendered web pages (Jinja2) of the API service; see ``docs/web.md``."""

from services.api.pages.app import setup_pages

__all__ = ["setup_pages"]
