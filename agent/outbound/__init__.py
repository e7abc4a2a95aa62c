"""Outbound calls: appointment reminders, callbacks and custom calls (issue 16).

``jobs`` holds the types both sides share: the scheduler (``scheduler``, which claims due calls
from the database and decides retries) and the dialer (``dialer``: Twilio's Calls.create with
answering-machine detection) with its webhooks and the agent's brief (``calls``), which place a
call and report what became of it.
"""
