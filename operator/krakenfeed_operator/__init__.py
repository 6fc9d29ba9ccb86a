"""The krakenfeed operator: turns KrakenFeed resources into running workers."""
