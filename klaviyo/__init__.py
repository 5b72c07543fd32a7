"""Everything that talks to Klaviyo: client, errors, retries, shared rate limiter, batching.

Plain Python: no web framework or database imports, so the web app (previews) and the
workers (sending) share it.
"""
