"""Command-line entry points: `python -m cli migrate | create-admin | dev`."""
