"""Item builders, one module per Klaviyo target; each turns resolved values into contract items."""
