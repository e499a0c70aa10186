"""State stores: ``open_store(url)`` picks the backend from the URL scheme."""
