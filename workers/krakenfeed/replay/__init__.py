"""A local Kraken: replays captured or generated sessions over both WebSocket APIs."""
