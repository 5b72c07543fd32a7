"""Everything that talks to Klaviyo: client, errors, retries, shared rate limiter, batching.

Plain Python: no web framework or database imports, so the web app (previews) and the
workers (sending) share it.

A worker sends a run's items like this::

    limiter = RateLimiter(redis, prefix="klaviyo:rl", time_scale=1)
    client = KlaviyoClient(api_key, base_url=url, limiter=limiter)   # one per process
    run_client = client.for_run(f"run:{run_id}")                    # fair turns between runs
    async for outcome in send_items(run_client, endpoints.BULK_EVENTS, rows):   # rows: (row_ref, item)
        outcome = await settle(run_client, endpoints.BULK_EVENTS, outcome)      # async jobs only
        record(outcome.accepted, outcome.rejected, outcome.attempts, outcome.http_status)

``AccessDenied`` (401/403) ends the run; other errors that outlast the retries propagate too.
"""
