"""From source rows to Klaviyo payloads: readers, mapping, transforms, payload builders.

Plain Python shared by the web app (preview, dry run) and the workers (sending).
"""
