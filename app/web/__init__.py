"""The HTTP edges: Twilio's webhooks, the JSON API, health and metrics."""
