"""KI-Mail-Helper application core: data model, envelope encryption, IMAP sync, web, CLI."""

__version__ = "0.1.0"
