"""Telephony: the pure Twilio and browser wire codecs, audio helpers, TwiML, tokens and
signatures, the pipecat serializers, the media routes (typed against telephony.host, never
agent/), Twilio REST and the replay client. Imports nothing from agent/ or tools/."""
