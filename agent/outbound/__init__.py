"""Outbound calls: appointment reminders, callbacks and custom calls (issue 16).

``jobs`` holds the types both sides share: the scheduler (which claims due calls from the
database and decides retries) and the dialer with its webhooks (which place a call through
Twilio and report what became of it).
"""
