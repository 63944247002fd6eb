"""The MetaCRM web platform: tenancy, accounts, record service, API and CLI.

Named ``crm_platform`` rather than ``platform`` because a top-level package
called ``platform`` shadows Python's standard module, which SQLAlchemy and
Flask import.
"""
