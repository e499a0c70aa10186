"""keywatch: watch Auth0 tenants' application signing keys."""

__version__ = "0.1.0"
