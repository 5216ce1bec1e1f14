"""The outbox: sending replies through the one door to Twilio, pacing, the consent hold, delivery
callbacks.
"""
