"""Frontdesk's application: everything that knows about FastAPI, pipecat and the vendors.

- settings, logging, install, shutdown: configuration read once, the log sink, set-up, SIGTERM.
- app: the app factory and its lifespan (models and the database); auth: bearer tokens.
- session: one call as a pipecat-free state machine; call_record: what a call writes.
- pipeline, processors, transport, turns, faults: the call's pipecat pipeline (the only
  pipecat code, with brain.service and providers); escalation: handing a call to a person.
- providers: the speech and language services (the only place vendor names appear).
- brain/: the local LLM (model, decoding, prompt, routing policy, pipecat service, HTTP).
- admin/: the admin console over HTTP; prompts: the prompt files, filled for a call.
"""
