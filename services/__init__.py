"""Database-backed services shared by the web app and the workers."""
