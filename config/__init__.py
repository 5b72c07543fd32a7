"""Process-wide configuration: settings from the environment, logging, secret encryption."""
