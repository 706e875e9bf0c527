"""Reference data: identity directory, asset inventory, network ranges, IP geolocation."""
